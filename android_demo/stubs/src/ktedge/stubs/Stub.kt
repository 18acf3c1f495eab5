package ktedge.stubs

/** Every stubbed body: these classes are compiled against, never run. */
fun <T> stub(): T = throw UnsupportedOperationException("signature stub: compile-time only")
