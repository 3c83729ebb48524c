"""Where an open_clip pretrained tag's weights come from, and whether they are here, decided before open_clip
tries to download them.

open_clip resolves a tag (``ViT-B-32`` / ``openai``) to a Hugging Face hub repository (preferred when
huggingface_hub is installed) or a url, and downloads into the hub's cache (``$HF_HUB_CACHE``) or
``~/.cache/clip``. Without network the hub retries every request for about a minute and open_clip ends in three
tracebacks; here a missing file is one line at once:

- offline (``DISTILL_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``): the file must be in the cache;
- online: one TCP connection to the source's host (or its proxy), ``REACH_TIMEOUT`` seconds at most, before
  open_clip starts.

A file already in the cache is loaded with the hub in offline mode: no update check, so a machine without
network loads it without a single retry.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ..model_zoo import offline_mode
from ..utils.errors import DistillInputError

REACH_TIMEOUT = 5.0  # seconds for one TCP connect: a black-holed network fails in seconds, not minutes
_TRUE = ("1", "true", "yes", "on")


class WeightsUnavailable(DistillInputError):
    """A pretrained tag's weights are not in the cache and cannot be downloaded now."""


@dataclass(frozen=True)
class WeightsSource:
    """Where open_clip will look for a tag's file: `cached` (a path) or None, `expected` (the cache path it would
    be written to), `origin` (hub repository or url, for the message), `url` (what a download connects to),
    `copy` (how to bring the file from a machine that has it)."""

    cached: str | None
    expected: str
    origin: str
    url: str
    copy: str


def offline() -> bool:
    """DISTILL_OFFLINE, or the hub's own HF_HUB_OFFLINE."""
    return offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE


def sync_offline_env() -> None:
    """Make DISTILL_OFFLINE reach huggingface_hub (open_clip downloads through it): the env var for a later
    import, the constant for an earlier one (huggingface_hub reads HF_HUB_OFFLINE once, at import)."""
    if not offline_mode():
        return
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True


@contextlib.contextmanager
def hub_offline():
    """The hub in offline mode for the duration (a cached file is then read without an update check)."""
    try:
        from huggingface_hub import constants
    except ImportError:
        yield
        return
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _hub_source(repo_and_file: str) -> WeightsSource:
    from huggingface_hub import constants, try_to_load_from_cache
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    repo, filename = os.path.split(repo_and_file)  # "org/name/" means open_clip's default file name
    filename = filename or HF_WEIGHTS_NAME
    names = [filename]  # open_clip tries a .safetensors twin first
    if filename == HF_WEIGHTS_NAME:
        names.insert(0, HF_SAFE_WEIGHTS_NAME)
    elif filename.endswith((".bin", ".pth")):
        names.insert(0, filename[:-4] + ".safetensors")
    cached = None
    for name in names:
        hit = try_to_load_from_cache(repo, name)
        if isinstance(hit, str):
            cached = hit
            break
    folder = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
    origin = f"{constants.ENDPOINT}/{repo} ({filename})"
    return WeightsSource(cached, str(folder), origin, constants.ENDPOINT, "copy that folder here")


def _url_source(url: str) -> WeightsSource:
    path = Path("~/.cache/clip").expanduser() / os.path.basename(url)  # open_clip's default cache_dir
    return WeightsSource(str(path) if path.is_file() else None, str(path), url, url, "copy the file there")


def weights_source(arch: str, tag: str) -> WeightsSource | None:
    """Where open_clip gets `arch`/`tag`'s file (its own rule: the hub when it is installed and the tag has a
    hub entry, else the url); None for a tag open_clip does not download."""
    from open_clip.pretrained import get_pretrained_cfg, has_hf_hub

    cfg = get_pretrained_cfg(arch, tag)
    if not cfg or cfg.get("file"):
        return None
    if cfg.get("hf_hub") and has_hf_hub():
        return _hub_source(cfg["hf_hub"])
    if cfg.get("url"):
        return _url_source(cfg["url"])
    return None


def _address(url: str) -> tuple[str, int]:
    """(host, port) a download of `url` connects to: its proxy's when one is set for it."""
    parsed = urlparse(url)
    proxy = urllib.request.getproxies().get(parsed.scheme)
    if proxy and not urllib.request.proxy_bypass(parsed.hostname or ""):
        parsed = urlparse(proxy if "://" in proxy else f"http://{proxy}")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return parsed.hostname or "", port


def unreachable(url: str, timeout: float = REACH_TIMEOUT) -> str | None:
    """Why `url`'s host (or its proxy) takes no TCP connection within `timeout` s; None when it does."""
    host, port = _address(url)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e) or type(e).__name__)
        return f"cannot reach {host}:{port}: {reason}"


def check_weights_available(arch: str, tag: str) -> WeightsSource | None:
    """The source of `arch`/`tag`'s weights when they are cached or can be downloaded now; else one
    WeightsUnavailable line naming the cache path and where the file comes from."""
    src = weights_source(arch, tag)
    if src is None or src.cached:
        return src
    why = "offline: DISTILL_OFFLINE / HF_HUB_OFFLINE" if offline() else unreachable(src.url)
    if why is None:
        return src
    raise WeightsUnavailable(
        f"{arch}/{tag}: weights not in the cache ({src.expected}); they come from {src.origin}; "
        f"run once with network (python tools/download_model.py {arch}/{tag}) or {src.copy} [{why}]"
    )


def fetch_pretrained(arch: str, tag: str) -> str:
    """Download `arch`/`tag`'s file into open_clip's cache (where it loads it from) and return its path: a
    machine with network fetches what an offline one will use."""
    sync_offline_env()
    import open_clip
    from open_clip.pretrained import download_pretrained, get_pretrained_cfg

    tags = open_clip.list_pretrained_tags_by_model(arch)
    if tag not in tags:
        known = f"its tags: {', '.join(tags)}" if tags else "see open_clip.list_pretrained()"
        raise DistillInputError(f"{arch}/{tag} is no open_clip pretrained tag ({known})")
    src = check_weights_available(arch, tag)
    if src is not None and src.cached:
        return src.cached
    try:
        return download_pretrained(get_pretrained_cfg(arch, tag))
    except Exception as e:  # open_clip and the hub raise many kinds; the reason is in the text
        text = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise WeightsUnavailable(f"{arch}/{tag}: download failed: {text}") from None
