"""A stand-in for the `adb` executable: the one thing the Android tests cannot have is a phone.

It keeps a phone's state in a folder (FAKE_ADB_STATE): `device.json` (serial, state, props, the
runner output to print, after how many commands the phone vanishes), `fs/` (the phone's files)
and `log.jsonl` (every command it was given). What it fakes is only the transport and the phone;
the parsing and measurement code under test runs for real on what it prints."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from pathlib import Path

STATE = Path(os.environ["FAKE_ADB_STATE"])


def local(remote: str) -> Path:
    return STATE / "fs" / remote.lstrip("/")


def fail(msg: str, code: int = 1) -> None:
    print(msg, file=sys.stderr)
    sys.exit(code)


def shell(dev: dict, command: str) -> None:
    words = shlex.split(command)
    if words[0] == "getprop":
        print(dev["props"].get(words[1], ""))
    elif words[0] == "mkdir":
        local(words[-1]).mkdir(parents=True, exist_ok=True)
    elif words[0] in ("rm",):
        for w in words[1:]:
            if not w.startswith("-"):
                p = local(w)
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    elif words[0] == "ls":
        p = local(words[1])
        print(words[1] if p.exists() else f"ls: {words[1]}: No such file or directory")
    elif words[0] == "am":  # the android_demo app's BenchmarkActivity, as its contract says it behaves
        extras = {words[i + 1]: words[i + 2] for i, w in enumerate(words) if w in ("--es", "--ei")}
        model = local(extras["model"])
        if not model.is_file():
            fail(f"model {extras['model']} not on the phone")
        detector = extras.get("detector")
        if detector is not None and not (local(detector).is_file() and local(detector).with_name("manifest.json").is_file()):
            fail(f"detector {detector} or its manifest not on the phone")
        result = dict(dev["app_result_pipeline" if detector else "app_result"])
        result["results"][0]["size_bytes"] = model.stat().st_size
        out = local(dev["app_result_path"])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result))
        print("Starting: Intent { cmp=org.ktedge.demo/.BenchmarkActivity (has extras) }\nStatus: ok\nLaunchState: COLD")
    elif words[0] == dev.get("runner_path"):
        model = next((w.split("=", 1)[1] for w in words if w.startswith(("--graph=", "--model_path="))), "")
        if not local(model).is_file():
            fail(f"ERROR: Could not open '{model}'.", 1)
        sys.stdout.write(Path(dev["runner_output"]).read_text())
    else:
        fail(f"/system/bin/sh: {words[0]}: inaccessible or not found", 127)


def main(argv: list[str]) -> None:
    dev = json.loads((STATE / "device.json").read_text())
    with open(STATE / "log.jsonl", "a") as log:
        log.write(json.dumps(argv) + "\n")
    calls = sum(1 for _ in open(STATE / "log.jsonl"))
    gone = dev.get("vanish_after") is not None and calls > dev["vanish_after"]
    if argv[:1] == ["devices"]:
        print("List of devices attached")
        if not gone:
            print(f"{dev['serial']}\t{dev['state']}")
        print()
        return
    if argv[:1] != ["-s"]:
        fail(f"fake adb: unsupported command {argv}")
    serial, cmd, args = argv[1], argv[2], argv[3:]
    if gone or serial != dev["serial"]:
        fail(f"adb: device '{serial}' not found")
    if cmd == "shell":
        shell(dev, args[0])
    elif cmd == "push":
        dst = local(args[1])
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args[0], dst)
        print(f"{args[0]}: 1 file pushed, 0 skipped.")
    elif cmd == "pull":
        src = local(args[0])
        if not src.is_file():
            fail(f"adb: error: failed to stat remote object '{args[0]}': No such file or directory")
        shutil.copyfile(src, args[1])
        print(f"{args[0]}: 1 file pulled, 0 skipped.")
    else:
        fail(f"fake adb: unsupported command {cmd}")


if __name__ == "__main__":
    main(sys.argv[1:])
