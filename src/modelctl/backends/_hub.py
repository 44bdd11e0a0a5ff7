"""The Hugging Face Hub and cache, shared by the llamacpp, huggingface and mlx backends.

Single files (GGUF) are fetched here, resumable across runs (`<file>.part` and Range requests)
and verified by sha256; whole repositories go through huggingface_hub's snapshot into its own
cache layout. Errors become one line that says what to check.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelctl.backends import BackendError, Progress, ProgressFn
from modelctl.record import naming
from modelctl.record.errors import InvalidReference, ModelctlError

if TYPE_CHECKING:
    from modelctl.record.model import Model

_EMBEDDING_HINTS = ("bert", "sentence", "minilm", "mpnet", "bge", "e5-", "gte-", "embed")


def scan_cache(cache: Path) -> Any:
    """huggingface_hub's scan of the cache folder (None if there is none), or one clear error."""
    from huggingface_hub import scan_cache_dir

    if not cache.is_dir():
        return None
    try:
        return scan_cache_dir(cache)
    except Exception as exc:  # CacheNotFound, a corrupt layout: one line
        raise BackendError(f"cannot read the Hugging Face cache at {cache}: {exc}") from None


def cached_model(repo: Any, backend: str) -> Model:
    """A Model record for one repository of the Hugging Face cache, served by `backend`."""
    from modelctl.record.model import Model

    config: dict[str, Any] = {}
    revision = max(repo.revisions, key=lambda r: r.last_modified, default=None)
    if revision is not None:
        for file in revision.files:
            if file.file_name == "config.json":
                try:
                    config = json.loads(file.file_path.read_text())
                except (OSError, ValueError):
                    config = {}
    lowered = repo.repo_id.lower()
    architectures = " ".join(config.get("architectures") or []).lower()
    embedding = any(h in lowered for h in _EMBEDDING_HINTS) and "causallm" not in architectures
    return Model.from_dict(
        {
            "id": repo.repo_id,
            "backend": backend,
            "refs": {backend: repo.repo_id},
            "tasks": ["embedding"]
            if embedding
            else ["chat"]
            if "instruct" in lowered
            else ["completion"],
            "capabilities": ["embeddings"] if embedding else ["completion", "streaming"],
            "parameters": naming.parse_parameters_from_name(repo.repo_id),
            "quantization": naming.parse_quantization(repo.repo_id)
            or {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}.get(
                config.get("torch_dtype", "")
            ),
            "context_length": config.get("max_position_embeddings"),
            "file_size": repo.size_on_disk,
            "location": str(repo.repo_path),
            "installed": True,
        },
        context=f"cached repo {repo.repo_id!r}",
    )


def file_sizes(repo: str, *, endpoint: str, revision: str | None = None) -> dict[str, int]:
    """Every file of a Hub repo with its size in bytes, as the Hub lists them (no download)."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=os.environ.get("HF_TOKEN") or None)
    try:
        entries = api.list_repo_tree(repo, revision=revision, recursive=True)
        return {e.path: int(e.size) for e in entries if getattr(e, "size", None) is not None}
    except Exception as exc:  # the hub library raises many kinds: one line each
        raise hub_error(exc, repo, endpoint) from None


def _tqdm_class(progress: ProgressFn | None, label: str) -> Any:
    """A tqdm stand-in that reports byte counts to `progress` instead of drawing a bar."""
    from tqdm.auto import tqdm

    class Report(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self._done = kwargs.get("initial", 0) or 0
            self._total = kwargs.get("total")

        def update(self, n: float | None = 1) -> bool | None:
            self._done += int(n or 0)
            if progress is not None:
                progress(Progress(f"downloading {label}", self._done, self._total))
            return None

    return Report


def hub_error(exc: Exception, repo: str, endpoint: str) -> ModelctlError:
    name = type(exc).__name__
    if "HFValidationError" in name:  # refused before any request: the name, not the Hub
        return InvalidReference(f"{repo!r} is not a Hub repo id", hint="write ORG/REPO")
    if "NotFound" in name or "EntryNotFound" in name:
        return BackendError(f"{repo} has no such file or revision on {endpoint}")
    if "GatedRepo" in name or "401" in str(exc) or "403" in str(exc):
        return BackendError(
            f"{repo} needs access on {endpoint}", hint="accept its license and set HF_TOKEN"
        )
    if (
        "Connect" in name
        or "Connection" in str(exc)
        or "Timeout" in name
        or "LocalEntryNotFound" in name
    ):
        return BackendError(
            f"cannot download {repo} from {endpoint}: {exc}",
            hint="check the network and HF_ENDPOINT; run the same command again to resume",
        )
    return BackendError(f"downloading {repo} failed: {exc}", hint="run the command again to resume")


def sha256_of(path: Path, chunk: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download_file(
    repo: str,
    filename: str,
    folder: Path,
    *,
    endpoint: str,
    progress: ProgressFn | None = None,
    revision: str | None = None,
    attempts: int = 3,
) -> Path:
    """One file of a repo into `folder/filename`, resumable across runs.

    Bytes go to `<file>.part`; a dropped connection is retried from where it stopped (a Range
    request), and a later run continues the same `.part`. Only a file of the expected size and
    sha256 (the hub's ETag for large files) is renamed to its real name.
    """
    import time

    import httpx
    from huggingface_hub import hf_hub_url

    from modelctl.backends import inside

    folder.mkdir(parents=True, exist_ok=True)
    final = inside(folder, filename)  # a repo's file name must not lead out of the folder
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    url = hf_hub_url(repo, filename, revision=revision, endpoint=endpoint)
    token = os.environ.get("HF_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = httpx.Timeout(30.0, read=300.0)
    with httpx.Client(follow_redirects=True, timeout=timeout, headers=headers) as client:
        try:
            head = client.head(url)
        except httpx.HTTPError as exc:
            raise hub_error(exc, repo, endpoint) from None
        _check(head, repo, filename, endpoint)
        size = (
            int(head.headers.get("X-Linked-Size") or head.headers.get("Content-Length") or 0)
            or None
        )
        etag = (head.headers.get("X-Linked-Etag") or head.headers.get("ETag") or "").strip('"')
        for attempt in range(1, attempts + 1):
            start = part.stat().st_size if part.exists() else 0
            if size is not None and start > size:
                part.unlink()
                start = 0
            if size is not None and start == size:
                break
            try:
                _fetch(client, url, part, start, size, filename, progress)
                break
            except (httpx.HTTPError, BackendError) as exc:
                if attempt == attempts:
                    have = part.stat().st_size if part.exists() else 0
                    raise BackendError(
                        f"download of {filename} from {repo} stopped at {have:,} of "
                        f"{size or 0:,} bytes: {exc}",
                        hint="run the command again to resume",
                    ) from None
                time.sleep(0.2 * attempt)
    if size is not None and part.stat().st_size != size:
        raise BackendError(f"{filename} is incomplete", hint="run the command again to resume")
    if len(etag) == 64 and all(c in "0123456789abcdef" for c in etag):
        if progress is not None:
            progress(Progress(f"verifying {filename}"))
        actual = sha256_of(part)
        if actual != etag:
            part.unlink(missing_ok=True)
            raise BackendError(
                f"{filename} from {repo} failed verification (sha256 {actual[:12]}… is not "
                f"{etag[:12]}…); the file was removed",
                hint="download it again",
            )
    os.replace(part, final)
    return final


def _open_part(part: Path, *, append: bool) -> Any:
    """The `.part` file to write, opened without following a link: a link planted under its
    name is refused, never written through."""
    # no link followed, and no blocking on a FIFO planted there (it fails without a reader)
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    flags |= os.O_APPEND if append else os.O_TRUNC
    try:
        fd = os.open(part, flags, 0o644)
    except OSError as exc:
        raise BackendError(
            f"cannot write {part}: {exc.strerror}",
            hint="a link or something else is in the way there; remove it",
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BackendError(f"{part} is not a regular file", hint="remove it and try again")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "ab" if append else "wb")


def _check(response: Any, repo: str, filename: str, endpoint: str) -> None:
    code = response.status_code
    if code < 400:
        return
    if code in (401, 403):
        raise BackendError(
            f"{repo} needs access on {endpoint}", hint="accept its license and set HF_TOKEN"
        )
    if code == 404:
        raise BackendError(f"{repo} has no such file or revision on {endpoint}: {filename}")
    raise BackendError(f"{endpoint} answered {code} for {repo}/{filename}", hint="try again later")


def _fetch(
    client: Any,
    url: str,
    part: Path,
    start: int,
    size: int | None,
    label: str,
    progress: ProgressFn | None,
) -> None:
    with client.stream(
        "GET", url, headers={"Range": f"bytes={start}-"} if start else {}
    ) as response:
        if response.status_code >= 400:
            raise BackendError(f"the hub answered {response.status_code}")
        if start and response.status_code == 200:  # the server ignored the Range: start over
            start = 0
        done = start
        with _open_part(part, append=bool(start)) as handle:
            for chunk in response.iter_bytes():  # as it arrives: a drop keeps what came
                handle.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(Progress(f"downloading {label}", done, size))


def snapshot(
    repo: str,
    cache: Path,
    *,
    endpoint: str,
    progress: ProgressFn | None = None,
    revision: str | None = None,
) -> Path:
    """A whole repo into the Hugging Face cache (the hub library's own layout)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                repo,
                revision=revision,
                cache_dir=cache,
                endpoint=endpoint,
                token=os.environ.get("HF_TOKEN") or None,
                tqdm_class=_tqdm_class(progress, repo),
            )
        )
    except Exception as exc:  # the hub library raises many kinds: one line each
        raise hub_error(exc, repo, endpoint) from None
