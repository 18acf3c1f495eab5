plugins {
    id("com.android.application") version "8.7.3" apply false
    // LiteRT's own build of 2.2+ uses Kotlin 2.3 (its WORKSPACE: rules_kotlin 2.3.20). A compiler reads
    // metadata at most one minor version newer than itself, so 2.2 is the oldest that reads such an AAR.
    id("org.jetbrains.kotlin.android") version "2.2.21" apply false
    id("org.jetbrains.kotlin.jvm") version "2.2.21" apply false
}
