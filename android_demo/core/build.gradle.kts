// The app's logic with no Android imports: manifest, preprocessing, decoding, result JSON.
// Also compiled and tested on a desktop JVM without Gradle: core/build_desktop.sh.
plugins {
    id("org.jetbrains.kotlin.jvm")
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    implementation("com.google.code.gson:gson:2.11.0")
    testImplementation("junit:junit:4.13.2")
}
