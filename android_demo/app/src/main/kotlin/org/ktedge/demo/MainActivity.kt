package org.ktedge.demo

import android.Manifest
import android.content.pm.PackageManager
import android.graphics.Bitmap
import android.graphics.Color
import android.graphics.Matrix
import android.os.Bundle
import android.view.View
import android.widget.AdapterView
import android.widget.ArrayAdapter
import android.widget.Button
import android.widget.Spinner
import android.widget.TextView
import androidx.activity.result.contract.ActivityResultContracts
import androidx.appcompat.app.AppCompatActivity
import androidx.camera.core.CameraSelector
import androidx.camera.core.ImageAnalysis
import androidx.camera.core.ImageProxy
import androidx.camera.lifecycle.ProcessCameraProvider
import androidx.core.content.ContextCompat
import org.ktedge.demo.core.Answer
import org.ktedge.demo.core.Artifact
import org.ktedge.demo.core.Manifest
import org.ktedge.demo.core.DelegateError
import org.ktedge.demo.core.ImageError
import org.ktedge.demo.core.ManifestError
import java.io.File
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors

/**
 * The demo screen: pick an artifact pushed to the app's files/models folder and a delegate, then
 * run it on the bundled face photos or the front camera. Where a detector artifact (ktedge's
 * published BlazeFace) was pushed beside it, every face of the frame is found, aligned and run;
 * otherwise the model sees the centre square. Each input as it lay in the frame, the landmarks,
 * boxes, other answers and the live detector and model latency are shown.
 */
class MainActivity : AppCompatActivity() {
    private val worker: ExecutorService = Executors.newSingleThreadExecutor()
    private lateinit var overlay: OverlayView
    private lateinit var status: TextView
    private var inference: Inference? = null
    private var imageIndex = 0
    private var camera: ProcessCameraProvider? = null

    private val askCamera = registerForActivityResult(ActivityResultContracts.RequestPermission()) { granted ->
        if (granted) startCamera() else showError("camera permission refused: use the bundled images")
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        overlay = findViewById(R.id.overlay)
        status = findViewById(R.id.status)
        val models = modelFiles()
        val modelSpinner = findViewById<Spinner>(R.id.model)
        val delegateSpinner = findViewById<Spinner>(R.id.delegate)
        modelSpinner.adapter = ArrayAdapter(this, android.R.layout.simple_spinner_dropdown_item, models.map { it.parentFile!!.name })
        delegateSpinner.adapter = ArrayAdapter(this, android.R.layout.simple_spinner_dropdown_item, FaceModels.DELEGATES)
        if (models.isEmpty()) showError(getString(R.string.no_models))
        val reload = object : AdapterView.OnItemSelectedListener {
            override fun onItemSelected(parent: AdapterView<*>?, view: View?, position: Int, id: Long) {
                val model = models.getOrNull(modelSpinner.selectedItemPosition) ?: return
                load(model, FaceModels.DELEGATES[delegateSpinner.selectedItemPosition])
            }
            override fun onNothingSelected(parent: AdapterView<*>?) = Unit
        }
        modelSpinner.onItemSelectedListener = reload
        delegateSpinner.onItemSelectedListener = reload
        findViewById<Button>(R.id.images).setOnClickListener { stopCamera(); nextImage() }
        findViewById<Button>(R.id.camera).setOnClickListener {
            if (ContextCompat.checkSelfPermission(this, Manifest.permission.CAMERA) == PackageManager.PERMISSION_GRANTED) startCamera()
            else askCamera.launch(Manifest.permission.CAMERA)
        }
    }

    override fun onDestroy() {
        stopCamera()
        worker.execute { inference?.close() }
        worker.shutdown()
        super.onDestroy()
    }

    /** Each folder under files/models holding a manifest.json and the model file it names. */
    private fun modelFiles(): List<File> {
        val root = File(getExternalFilesDir(null), "models")
        return (root.listFiles() ?: emptyArray()).filter { File(it, "manifest.json").isFile }.sortedBy { it.name }.mapNotNull { dir ->
            dir.listFiles()?.firstOrNull { it.name.endsWith(".tflite") || it.name.endsWith(".pte") }
        }
    }

    /**
     * The detector for `model`: among the pushed folders, a detector artifact in the same format,
     * of the same precision where there is one (as `ktedge predict` picks the run's own); null if
     * `model` is a detector itself, states no alignment, or none was pushed.
     */
    private fun detectorFor(model: Manifest, models: List<File>): File? {
        if (model.isDetector || model.preprocessing.alignment == null) return null
        val detectors = models.mapNotNull { f ->
            val m = try { Manifest.parse(File(f.parentFile, "manifest.json").readText()) } catch (e: ManifestError) { null }
            if (m != null && m.isDetector && m.format == model.format) Pair(f, m) else null
        }
        return (detectors.firstOrNull { it.second.precision == model.precision } ?: detectors.firstOrNull())?.first
    }

    private fun load(model: File, delegate: String) = worker.execute {
        inference?.close()
        inference = null
        try {
            val artifact = Artifact.load(model)
            val threads = 4
            val loaded = Loaded(artifact, FaceModels.open(artifact, delegate, threads, applicationInfo.nativeLibraryDir))
            val detector = detectorFor(artifact.manifest, modelFiles())?.let { f ->
                val a = Artifact.load(f)
                Loaded(a, FaceModels.open(a, delegate, threads, applicationInfo.nativeLibraryDir))
            }
            inference = Inference(loaded, detector)
            val finds = when {
                artifact.manifest.isDetector -> "a detector: its faces on the whole frame"
                detector != null -> "faces found by ${detector.artifact.model.parentFile!!.name} (${detector.model.delegate})"
                artifact.manifest.preprocessing.alignment == null -> "the centre square (the model states no alignment)"
                else -> "the centre square (push a blazeface artifact beside it to find the faces)"
            }
            runOnUiThread {
                status.setTextColor(Color.WHITE)
                status.text = "${artifact.manifest.model} ${artifact.manifest.format} ${artifact.manifest.precision}: " +
                    "${loaded.model.runtime}, running on ${loaded.model.delegate}; $finds"
                if (camera == null) nextImage()
            }
        } catch (e: ManifestError) {
            showError(e.message ?: "manifest error")
        } catch (e: DelegateError) {
            showError(e.message ?: "delegate error")
        } catch (e: Exception) {
            showError("${model.name}: ${e.javaClass.simpleName}: ${e.message}")
        }
    }

    private fun nextImage() {
        val names = BundledFaces.names(this)
        if (names.isEmpty()) return
        val bitmap = BundledFaces.load(this, names[imageIndex++ % names.size])
        worker.execute { run(bitmap) }
    }

    /** Runs on the worker thread; the result is drawn on the UI thread. */
    private fun run(bitmap: Bitmap) {
        val current = inference ?: return runOnUiThread { overlay.show(bitmap, null, 0) }
        try {
            val p = current.predict(bitmap)
            val text = p.faces.mapIndexed { i, face ->
                face.answers.entries.filter { it.value !is Answer.Points && it.value !is Answer.Box && it.value !is Answer.Faces }
                    .joinToString("; ", prefix = "face ${i + 1}: ") { "${it.key}: ${it.value.toJson()}" }
            }.joinToString("\n")
            val detector = p.detectorMs?.let { "detector %.2f ms, ".format(it) } ?: ""
            val faces = if (current.detects) "${p.faces.size} face(s), " else ""
            runOnUiThread {
                overlay.show(bitmap, p, current.model.artifact.manifest.preprocessing.cropSize)
                status.setTextColor(Color.WHITE)
                status.text = "${current.model.model.delegate}: $faces${detector}model %.2f ms\n%s".format(p.modelMs, text)
            }
        } catch (e: ImageError) {
            showError(e.message ?: "image error")
        } catch (e: ManifestError) {
            showError(e.message ?: "manifest error")
        }
    }

    private fun startCamera() {
        val future = ProcessCameraProvider.getInstance(this)
        future.addListener({
            val provider = future.get()
            val analysis = ImageAnalysis.Builder()
                .setOutputImageFormat(ImageAnalysis.OUTPUT_IMAGE_FORMAT_RGBA_8888)
                .setBackpressureStrategy(ImageAnalysis.STRATEGY_KEEP_ONLY_LATEST)
                .build()
            analysis.setAnalyzer(worker) { proxy -> run(upright(proxy)) }
            provider.unbindAll()
            provider.bindToLifecycle(this, CameraSelector.DEFAULT_FRONT_CAMERA, analysis)
            camera = provider
        }, ContextCompat.getMainExecutor(this))
    }

    private fun stopCamera() {
        camera?.unbindAll()
        camera = null
    }

    /** The frame turned upright and mirrored, as a front camera preview is seen; the model sees the same. */
    private fun upright(proxy: ImageProxy): Bitmap = proxy.use {
        val matrix = Matrix().apply {
            postRotate(it.imageInfo.rotationDegrees.toFloat())
            postScale(-1f, 1f)
        }
        val frame = it.toBitmap()
        Bitmap.createBitmap(frame, 0, 0, frame.width, frame.height, matrix, true)
    }

    private fun showError(message: String) = runOnUiThread {
        status.setTextColor(Color.RED)
        status.text = message
    }
}
