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
import kotlin.math.min

/** The image the model saw, fitted to the view, with its crop, points and boxes drawn over it. */
class OverlayView(context: Context, attrs: AttributeSet?) : View(context, attrs) {
    private var bitmap: Bitmap? = null
    private var prediction: Prediction? = null
    private val cropPaint = Paint().apply { color = Color.YELLOW; style = Paint.Style.STROKE; strokeWidth = 3f }
    private val boxPaint = Paint().apply { color = Color.RED; style = Paint.Style.STROKE; strokeWidth = 4f }
    private val pointPaint = Paint().apply { color = Color.GREEN; style = Paint.Style.FILL }

    fun show(bitmap: Bitmap, prediction: Prediction?) {
        this.bitmap = bitmap
        this.prediction = prediction
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
        val c = p.crop
        canvas.drawRect(x(c.x0.toDouble()), y(c.y0.toDouble()), x((c.x0 + c.side).toDouble()), y((c.y0 + c.side).toDouble()), cropPaint)
        val radius = maxOf(2f, c.side * scale / 100f)
        for (answer in p.answers.values) {
            when (answer) {
                is Answer.Points -> answer.xy.forEach { canvas.drawCircle(x(it[0]), y(it[1]), radius, pointPaint) }
                is Answer.Box -> canvas.drawRect(x(answer.xyxy[0]), y(answer.xyxy[1]), x(answer.xyxy[2]), y(answer.xyxy[3]), boxPaint)
                else -> Unit // shown as text under the view
            }
        }
    }
}
