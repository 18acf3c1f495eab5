"""The host latency protocol (see harness.py) for LiteRT files on a machine that has only
`ai-edge-litert` and numpy, e.g. another CPU to compare int8 against fp32 on:

    python litert_standalone.py THREADS WARMUP ITERS ROUNDS  # in a folder of *.tflite + face.npy

Kept free of ktedge imports on purpose so it can be copied next to the files. face.npy is
bench/host/face.npy of a run; inputs of another size get a nearest resize (enough for timing).
Prints one JSON object: median / p90 ms per file, timed interleaved over ROUNDS."""
import glob
import json
import os
import platform
import sys
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter


def main() -> None:
    threads, warmup, iters, rounds = (int(a) for a in sys.argv[1:5])
    face = np.load("face.npy").transpose(0, 2, 3, 1)  # (1, S, S, 3) float32 RGB 0..255
    runs, first = {}, {}
    for path in sorted(glob.glob("*.tflite")):
        it = Interpreter(model_path=path, num_threads=threads)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        _, h, w, _ = d["shape"]
        x = face[:, np.arange(h) * face.shape[1] // h][:, :, np.arange(w) * face.shape[2] // w]
        if path.startswith("face_"):  # MediaPipe's models take 0..1
            x = x / 255.0
        scale, zero = d["quantization"]
        x = (np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8) if d["dtype"] == np.int8
             else x.astype(np.float32))

        def run(it=it, index=d["index"], x=x):
            it.set_tensor(index, x)
            it.invoke()
        t0 = time.perf_counter()
        run()
        first[path] = 1e3 * (time.perf_counter() - t0)
        for _ in range(warmup):
            run()
        runs[path] = run
    samples = {p: [] for p in runs}
    for _ in range(rounds):
        for path, run in runs.items():
            for _ in range(iters // rounds):
                t0 = time.perf_counter()
                run()
                samples[path].append(1e3 * (time.perf_counter() - t0))
    print(json.dumps({"cpu": platform.processor() or platform.machine(), "threads": threads, "iters": iters,
                      "rounds": rounds, "results": {p: {"median": float(np.median(v)), "p90": float(np.percentile(v, 90)),
                                                        "first_ms": first[p], "size_bytes": os.path.getsize(p)}
                                                    for p, v in samples.items()}}))


if __name__ == "__main__":
    main()
