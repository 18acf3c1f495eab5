package org.ktedge.demo

import android.content.Context
import android.graphics.Bitmap
import android.graphics.Canvas
import android.graphics.Color
import android.graphics.Paint
import android.graphics.RectF
import android.util.AttributeSet
import android.view.View
import org.ktedge.demo.core.Answer
import org.ktedge.demo.core.FrameAnswers
import org.ktedge.demo.core.Geometry
import kotlin.math.hypot
import kotlin.math.min

/** The frame, fitted to the view, with each input the model saw as it lay there (yellow), and
 * every face's points (green) and boxes (red) drawn over it. */
class OverlayView(context: Context, attrs: AttributeSet?) : View(context, attrs) {
    private var bitmap: Bitmap? = null
    private var prediction: FrameAnswers? = null
    private var inputSize = 0
    private val cropPaint = Paint().apply { color = Color.YELLOW; style = Paint.Style.STROKE; strokeWidth = 3f }
    private val boxPaint = Paint().apply { color = Color.RED; style = Paint.Style.STROKE; strokeWidth = 4f }
    private val pointPaint = Paint().apply { color = Color.GREEN; style = Paint.Style.FILL }

    /** `inputSize`: the model's input side, in its pixels (the manifest's crop_size). */
    fun show(bitmap: Bitmap, prediction: FrameAnswers?, inputSize: Int) {
        this.bitmap = bitmap
        this.prediction = prediction
        this.inputSize = inputSize
        invalidate()
    }

    override fun onDraw(canvas: Canvas) {
        super.onDraw(canvas)
        val b = bitmap ?: return
        val scale = min(width.toFloat() / b.width, height.toFloat() / b.height)
        val left = (width - b.width * scale) / 2
        val top = (height - b.height * scale) / 2
        canvas.drawBitmap(b, null, RectF(left, top, left + b.width * scale, top + b.height * scale), null)
        val p = prediction ?: return
        fun x(v: Double) = left + v.toFloat() * scale
        fun y(v: Double) = top + v.toFloat() * scale
        for (face in p.faces) {
            val m = face.toPhoto
            val n = inputSize.toDouble()
            val corners = listOf(Geometry.map(m, 0.0, 0.0), Geometry.map(m, n, 0.0), Geometry.map(m, n, n), Geometry.map(m, 0.0, n))
            for (i in corners.indices) {
                val a = corners[i]
                val b = corners[(i + 1) % corners.size]
                canvas.drawLine(x(a[0]), y(a[1]), x(b[0]), y(b[1]), cropPaint)
            }
            val radius = maxOf(2f, (hypot(m[0], m[3]) * n * scale / 100).toFloat())
            fun box(b: DoubleArray) = canvas.drawRect(x(b[0]), y(b[1]), x(b[2]), y(b[3]), boxPaint)
            for (answer in face.answers.values) {
                when (answer) {
                    is Answer.Points -> answer.xy.forEach { canvas.drawCircle(x(it[0]), y(it[1]), radius, pointPaint) }
                    is Answer.Box -> box(answer.xyxy)
                    is Answer.Faces -> answer.faces.forEach { f ->
                        box(f.box)
                        f.keypoints.forEach { canvas.drawCircle(x(it[0]), y(it[1]), radius, pointPaint) }
                    }
                    else -> Unit // shown as text under the view
                }
            }
        }
    }
}
