"""The state file: read, validate and edit the user's desired state, safely.

The file is shared with humans and GitOps tools, so an edit is a read-modify-write under an
advisory lock (`fcntl.flock` on `.<name>.lock` beside it), changes only the edited instance's
table (comments and layout elsewhere stay byte for byte), is validated before it is written,
and lands atomically (temp file, fsync, rename, fsync of the directory): a reader, or a crash,
sees the old file or the new one, never a mix. The revision is the sha256 of the bytes, so a
writer can say which version its change was based on (HTTP `If-Match`).

A file that is a symlink (a ConfigMap's `..data` link) or sits on a read-only mount belongs to
GitOps: edits raise `StateReadOnly` and never touch it. Everything here is synchronous; async
callers use `anyio.to_thread.run_sync`.

A file larger than `max_bytes` is never read (`StateFileTooLarge`), and at most
`MAX_PROBLEMS` problems are reported for one file, the rest counted: a huge invalid file costs
a bounded amount of memory, time and log.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import os
import re
import stat
import tomllib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from tei_reconciler.atomic import write_atomically
from tei_reconciler.desired.check import check_state
from tei_reconciler.desired.modeledit import rewrite_model
from tei_reconciler.desired.models import check_models, with_model_revisions
from tei_reconciler.desired.spec import DesiredState
from tei_reconciler.desired.tomledit import Fields, plain, rewrite_instance
from tei_reconciler.desired.tomlpositions import scan
from tei_reconciler.errors import (
    InstanceExists,
    InstanceNotFound,
    Problem,
    RevisionConflict,
    SpecError,
    StateFileError,
    StateFileTooLarge,
    StateReadOnly,
)

_AT = re.compile(r"\(at line (\d+), column (\d+)\)")

#: The default of the manager's `max_state_bytes`: far above any real state file.
DEFAULT_MAX_BYTES = 1024 * 1024
#: At most this many problems are listed for one file; the rest are counted.
MAX_PROBLEMS = 100


def revision_of(data: bytes) -> str:
    """The revision (ETag) of a state file's bytes."""
    return hashlib.sha256(data).hexdigest()


def _syntax(path: str, message: str, line: int = 0, column: int = 0) -> SpecError:
    return SpecError(
        [
            Problem(
                path=path, line=line, column=column, field="syntax", message=message, code="syntax"
            )
        ]
    )


def decode(data: bytes, path: str = "<state>") -> tuple[str, dict[str, Any]]:
    """UTF-8 TOML bytes to (text, data). Raises SpecError with the syntax error's position."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        head = data[: exc.start]
        line = head.count(b"\n") + 1
        column = len(head) - (head.rfind(b"\n") + 1) + 1
        raise _syntax(path, "the file is not UTF-8 text", line, column) from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        where = _AT.search(str(exc))
        message = _AT.sub("", str(exc)).strip() or "invalid TOML"
        if where is None:
            raise _syntax(path, f"invalid TOML: {message}") from None
        line, column = int(where.group(1)), int(where.group(2))
        raise _syntax(path, f"invalid TOML: {message}", line, column) from None
    except RecursionError:
        raise _syntax(path, "invalid TOML: nested too deeply") from None


def _size(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MiB"
    return f"{size / 1024:.1f} KiB" if size >= 1024 else f"{size} bytes"


def _too_large(size: int, limit: int) -> str:
    return f"is {_size(size)}, more than max_state_bytes ({_size(limit)})"


def parse_state(
    data: bytes,
    path: str = "<state>",
    *,
    reserved_ports: frozenset[int] = frozenset(),
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> DesiredState:
    """Validate a state file's bytes in full. Raises SpecError listing the problems (at most
    MAX_PROBLEMS, then a count of the rest), each located at its key's line and column."""
    if len(data) > max_bytes:
        message = f"the state {_too_large(len(data), max_bytes)}"
        raise SpecError(
            [Problem(path=path, line=0, column=0, field="file", message=message, code="too_large")]
        )
    text, doc = decode(data, path)
    specs, issues = check_state(doc, reserved_ports=reserved_ports, limit=MAX_PROBLEMS)
    models = check_models(doc.get("models"), issues)
    if issues:
        layout = scan(text, wanted=[issue.key for issue in issues])
        problems = [issue.problem(path, *layout.locate(issue.key)) for issue in issues]
        problems.sort(key=lambda p: (p.line, p.column))
        if issues.more:
            message = f"... and {issues.more} more problems (only the first {len(issues)} shown)"
            problems.append(
                Problem(path=path, line=0, column=0, field="file", message=message, code="more")
            )
        raise SpecError(problems)
    instances = with_model_revisions(specs, models)
    return DesiredState(instances=instances, revision=revision_of(data), models=models)


def read_bounded(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """A state file's bytes. FileNotFoundError when it does not exist; StateFileTooLarge when
    it is larger than `max_bytes` (judged before reading); StateFileError when it is not a
    regular file (a directory, a FIFO that would block) or cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StateFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise StateFileError(f"{path} is a directory, not a state file")
        if not stat.S_ISREG(info.st_mode):
            raise StateFileError(f"{path} is not a regular file")
        if info.st_size > max_bytes:
            raise StateFileTooLarge(f"{path} {_too_large(info.st_size, max_bytes)}; not read")
        chunks, left = [], max_bytes + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    except OSError as exc:
        raise StateFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:  # grew since the check
        raise StateFileTooLarge(f"{path} {_too_large(len(data), max_bytes)}; not read")
    return data


def load_state(
    path: Path,
    *,
    reserved_ports: frozenset[int] = frozenset(),
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> DesiredState:
    """Read and validate a state file. StateFileError when it cannot be read (missing or too
    large included), SpecError when it is invalid."""
    try:
        data = read_bounded(path, max_bytes)
    except FileNotFoundError:
        raise StateFileError(f"{path}: no such file") from None
    return parse_state(data, str(path), reserved_ports=reserved_ports, max_bytes=max_bytes)


class StateFile:
    """One state file on disk. A file that does not exist yet reads as empty (no instances);
    the first edit creates it. `max_instances` is checked under the lock, so concurrent
    writers cannot together pass it; an edit that does not add an instance is always allowed."""

    def __init__(
        self,
        path: Path,
        *,
        reserved_ports: frozenset[int] = frozenset(),
        max_instances: int | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.path = path
        self.reserved_ports = reserved_ports
        self.max_instances = max_instances
        self.max_bytes = max_bytes
        self.lock_path = path.with_name(f".{path.name}.lock")

    # --- reading ---

    def read(self) -> tuple[bytes, str]:
        """The file's bytes and revision (b"" and its revision when there is no file).
        StateFileError (StateFileTooLarge above `max_bytes`) when it cannot be read."""
        try:
            data = read_bounded(self.path, self.max_bytes)
        except FileNotFoundError:
            data = b""
        return data, revision_of(data)

    def parse(self, data: bytes) -> DesiredState:
        """Validate `data` as this file would be (its reserved ports and size limit)."""
        return parse_state(
            data, str(self.path), reserved_ports=self.reserved_ports, max_bytes=self.max_bytes
        )

    def load(self) -> DesiredState:
        data, _ = self.read()
        return self.parse(data)

    def is_read_only(self) -> bool:
        """True when the file is GitOps-owned or cannot be replaced (see `read_only_reason`)."""
        return self.read_only_reason() is not None

    def read_only_reason(self) -> str | None:
        """Why the file may not be written, in words (None when it may): a symlink, a
        read-only mount, a file without write permission, or a directory we may not write in."""
        if self.path.is_symlink():
            return f"{self.path} is a symlink (a ConfigMap or git-sync checkout): edit its source"
        parent = self.path.parent
        exists = self.path.exists()
        try:
            if os.statvfs(self.path if exists else parent).f_flag & os.ST_RDONLY:
                return f"{self.path} is on a read-only mount"
            if exists and (
                not self.path.stat().st_mode & 0o222 or not os.access(self.path, os.W_OK)
            ):
                return f"{self.path} is not writable (file permissions)"
        except OSError as exc:
            return f"{self.path} cannot be inspected: {exc.strerror or exc}"
        if not os.access(parent, os.W_OK):
            return f"the directory {parent} is not writable"
        return None

    # --- edits ---

    def add_instance(
        self, name: str, fields: Fields, *, expected_revision: str | None = None
    ) -> DesiredState:
        """Add `[instances.<name>]` with `fields`. Raises InstanceExists."""

        def change(instances: dict[str, Any]) -> Fields | None:
            if name in instances:
                raise InstanceExists(name)
            return _clean(fields)

        return self._edit_instance(name, change, expected_revision)

    def apply_instance(
        self, name: str, fields: Fields, *, expected_revision: str | None = None
    ) -> tuple[DesiredState, bool]:
        """Create the instance or replace its whole table; True when it was created."""
        created = False

        def change(instances: dict[str, Any]) -> Fields | None:
            nonlocal created
            created = name not in instances
            return _clean(fields)

        state = self._edit_instance(name, change, expected_revision)
        return state, created

    def remove_instance(self, name: str, *, expected_revision: str | None = None) -> DesiredState:
        """Remove the instance's table. Raises InstanceNotFound."""

        def change(instances: dict[str, Any]) -> Fields | None:
            if name not in instances:
                raise InstanceNotFound(name)
            return None

        return self._edit_instance(name, change, expected_revision)

    def set_field(
        self, name: str, field: str, value: object, *, expected_revision: str | None = None
    ) -> DesiredState:
        """Set one key of an instance (None removes it). Raises InstanceNotFound."""
        return self.set_fields(name, {field: value}, expected_revision=expected_revision)

    def set_fields(
        self, name: str, values: dict[str, object], *, expected_revision: str | None = None
    ) -> DesiredState:
        """Set several keys of an instance in one write (None removes a key)."""

        def change(instances: dict[str, Any]) -> Fields | None:
            current = instances.get(name)
            if not isinstance(current, dict):
                raise InstanceNotFound(name)
            updated = dict(current)
            for field, value in values.items():
                if value is None:
                    updated.pop(field, None)
                else:
                    updated[field] = plain(field, value)
            return updated

        return self._edit_instance(name, change, expected_revision)

    def replace(self, data: bytes, *, expected_revision: str | None = None) -> DesiredState:
        """Replace the whole file with `data` once it validates."""

        def change(_: bytes) -> bytes:
            decode(data, str(self.path))
            return data

        return self._edit(change, expected_revision, whole=True)

    def declare_model(
        self,
        model_id: str,
        fields: Mapping[str, object],
        *,
        expected_revision: str | None = None,
    ) -> tuple[DesiredState, bool]:
        """Set the `[models."<id>"]` table (only the given fields; None: left as written).
        Returns the new state and whether the model was newly declared."""
        created = False

        def edit(data: bytes) -> bytes:
            nonlocal created
            text, doc = decode(data, str(self.path)) if data else ("", {})
            models = doc.get("models")
            current = models.get(model_id) if isinstance(models, dict) else None
            created = not isinstance(current, dict)
            merged = {**(current if isinstance(current, dict) else {}), **_clean(dict(fields))}
            return rewrite_model(text, model_id, merged).encode("utf-8")

        return self._edit(edit, expected_revision), created

    def undeclare_model(
        self, model_id: str, *, expected_revision: str | None = None
    ) -> DesiredState:
        """Remove the `[models."<id>"]` table (nothing to do when there is none)."""

        def edit(data: bytes) -> bytes:
            text, _ = decode(data, str(self.path)) if data else ("", {})
            new_text = rewrite_model(text, model_id, None)
            return (new_text if new_text.strip() else "[instances]\n").encode("utf-8")

        return self._edit(edit, expected_revision)

    # --- machinery ---

    def _edit_instance(
        self,
        name: str,
        change: Callable[[dict[str, Any]], Fields | None],
        expected_revision: str | None,
    ) -> DesiredState:
        def edit(data: bytes) -> bytes:
            text, doc = decode(data, str(self.path)) if data else ("", {})
            instances = doc.get("instances")
            fields = change(instances if isinstance(instances, dict) else {})
            try:
                new_text, exact = rewrite_instance(text, name, fields)
            except (TypeError, ValueError) as exc:
                raise SpecError(
                    [
                        Problem(
                            path=str(self.path),
                            line=0,
                            column=0,
                            field=f"instances.{name}",
                            message=f"cannot be written as TOML: {exc}",
                        )
                    ]
                ) from None
            if not exact:
                self._validate(new_text)
                raise StateFileError(f"{self.path}: instances.{name} cannot be written as given")
            if not new_text.strip():
                # An empty file reads as a truncated save (the controller keeps the last good
                # state); removing the last instance says so explicitly.
                new_text = "[instances]\n"
            return new_text.encode("utf-8")

        return self._edit(edit, expected_revision)

    def _validate(self, text: str) -> DesiredState:
        return self.parse(text.encode("utf-8"))

    def _edit(
        self,
        edit: Callable[[bytes], bytes],
        expected_revision: str | None,
        *,
        whole: bool = False,
    ) -> DesiredState:
        reason = self.read_only_reason()
        if reason is not None:
            raise StateReadOnly(reason)
        with self._locked():
            self._remove_orphans()
            try:
                data, revision = self.read()
            except StateFileTooLarge:
                # Replacing the whole file is how a too large one is fixed through the API;
                # with If-Match the caller claims to know a revision nobody could compute.
                if not whole or expected_revision is not None:
                    raise
                data, revision = b"", ""
            if expected_revision is not None and expected_revision != revision:
                raise RevisionConflict(expected_revision, revision)
            new_data = edit(data)
            state = self.parse(new_data)
            self._check_capacity(data, state)
            if new_data != data:
                self._write(new_data)
            return state

    def _check_capacity(self, old_data: bytes, new: DesiredState) -> None:
        limit = self.max_instances
        if limit is None or len(new.instances) <= limit:
            return
        old = decode(old_data, str(self.path))[1].get("instances", {}) if old_data else {}
        if len(new.instances) <= len(old if isinstance(old, dict) else {}):
            return
        message = f"max_instances ({limit}) reached: the file would hold {len(new.instances)}"
        raise SpecError(
            [
                Problem(
                    path=str(self.path),
                    line=0,
                    column=0,
                    field="instances",
                    message=message,
                    code="max_instances",
                )
            ]
        )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StateFileError(f"{self.lock_path}: cannot lock: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _remove_orphans(self) -> None:
        """Delete temp files a killed writer left behind. Writers create temp files only while
        holding the lock, so under the lock every one that exists is an orphan."""
        for orphan in self.path.parent.glob(f".{glob.escape(self.path.name)}.*.tmp"):
            with contextlib.suppress(OSError):
                orphan.unlink()

    def _write(self, data: bytes) -> None:
        try:
            write_atomically(self.path, data, keep_mode=True)
        except OSError as exc:
            raise StateFileError(f"{self.path}: cannot write: {exc.strerror}") from None


def _clean(fields: Fields) -> Fields:
    """Caller-supplied fields as TOML data; None means "not set" and is left out."""
    return {k: plain(k, v) for k, v in fields.items() if v is not None}
