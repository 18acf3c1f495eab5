// The app's logic with no Android imports: manifest, preprocessing, decoding, result JSON.
// Also compiled and tested on a desktop JVM without Gradle: core/build_desktop.sh.
import org.jetbrains.kotlin.gradle.dsl.JvmTarget

plugins {
    id("org.jetbrains.kotlin.jvm")
}

// Java 17 bytecode from whatever JDK (17 or newer) runs Gradle: a jvmToolchain(17) would need that
// exact JDK installed, or a toolchain resolver to download one.
java {
    sourceCompatibility = JavaVersion.VERSION_17
    targetCompatibility = JavaVersion.VERSION_17
}

kotlin {
    compilerOptions { jvmTarget.set(JvmTarget.JVM_17) }
}

dependencies {
    implementation("com.google.code.gson:gson:2.11.0")
    testImplementation("junit:junit:4.13.2")
}
