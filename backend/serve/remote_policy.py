"""What a remote client may ask of the server, and what it is shown (docs/ARCHITECTURE.md §9).

A token admits generations, not the server's filesystem. The TCP server (tcp_server.py) hands every
`generate` config to `RemotePolicy.apply` before building it, and every event to
`RemotePolicy.outgoing` before sending it:

- run folders: `run_dir` and `out` are refused; each run is a new child of the output root
  (`serve --out`), named by the server and made with an exclusive mkdir, so a symlink already
  there (pointing anywhere) is never written through;
- targets: the analytic prior's targets travel as data (`{"targets": [...]}`); a path is refused;
  so is an init mesh (`init_mesh`: a file on the client's machine, which cannot travel yet);
- resuming: a refine (`refine_from`) only of a run folder this server made, named as its events
  name it (relative to the output root): a real folder directly in the root, or a variation in a
  variations run there, never a symlink;
- models: a hub id (sent on as `hub:ID`, never read as a folder of the server's working
  directory), or a folder under one of the operator's model roots (`serve --models DIR`), named
  relative to it and resolved with its symlinks inside that root; anything else is refused;
- weights: safetensors only (`weights="safetensors"`) unless the operator allows pickles
  (`serve --allow-pickle-weights`);
- what goes out: paths under the output root or a model root become relative to it, any other
  absolute path becomes `<server path>`, in every string of every event; the full error goes to
  the server's log; a preview or mesh larger than `max_file_bytes` arrives as `data_error`.

The stdio server (the add-on on the same machine) applies none of this: it keeps `run_dir`, `out`,
paths for targets and any local model.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path, PurePath
from typing import Any

from .. import protocol
from ..cluster.variations import INDEX_NAME as VARIATIONS_INDEX
from ..config import HUB_ID, HUB_PREFIX, ConfigError, GenerationConfig

log = logging.getLogger("dreamtime.server")

# The config's text fields that may name a path on the server, and those that never do. A test
# checks that every text field of GenerationConfig is in one of them, so a new path field is
# classified here (and refused or translated in apply) before a remote client can use it.
PATH_FIELDS = ("out", "run_dir", "targets", "model", "init_mesh", "refine_from")
TEXT_FIELDS = ("prompt", "negative_prompt", "schedule", "guidance", "encoding", "hashgrid_implementation", "hashgrid_dtype", "background",
               "device", "precision", "weights", "export",
               "extra")  # extra's keys are read one by one (grad_clip): none may be a path without a rule here
SERVER_PATH = "<server path>"
NOT_SENT = ("data", "sha256", "id")  # file bytes, their hash, and the client's own run id go out as they are
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/\\~-])/[\w.@%+=~-][\w.@%+=~/-]*|\b[A-Za-z]:[\\/][^\s'\"]*|\\\\[^\s'\"]+|~/[^\s'\"]*")
MAX_LISTED_MODELS = 20


class RemotePolicy:
    def __init__(self, out_root: str | os.PathLike, model_roots: tuple[str | os.PathLike, ...] = (), allow_pickle_weights: bool = False,
                 max_file_bytes: int = protocol.MAX_FILE_BYTES):
        self.out_root = Path(out_root).resolve()
        self.model_roots = tuple(Path(root).resolve() for root in model_roots)
        self.allow_pickle_weights, self.max_file_bytes = allow_pickle_weights, max_file_bytes
        self._roots = sorted((str(root) for root in (self.out_root, *self.model_roots)), key=len, reverse=True)  # the longer first

    @classmethod
    def from_options(cls, out: str | None, models: list[str], allow_pickle_weights: bool, max_file_mib: float) -> "RemotePolicy":
        """The RemotePolicy of the `serve --listen` options; ValueError naming a bad one."""
        root = Path(out if out else Path.cwd() / "runs").expanduser()
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"--out {root}: cannot make the output folder ({exc.strerror or exc})") from None
        for folder in models:
            if not Path(folder).expanduser().is_dir():
                raise ValueError(f"--models {folder}: not a folder")
        if not max_file_mib > 0:
            raise ValueError(f"--max-file-mib: must be > 0, got {max_file_mib:g}")
        return cls(root, tuple(Path(folder).expanduser() for folder in models), allow_pickle_weights, round(max_file_mib * 2**20))

    # ------------------------------------------------------------------ requests
    def apply(self, values: dict[str, Any]) -> dict[str, Any]:
        """A remote client's config as the server builds it; ConfigError naming the refused field."""
        values = dict(values)
        for name in ("run_dir", "out"):
            if values.get(name, "") != "":
                raise ConfigError(name, "a remote client cannot choose where the server writes: every run gets a new folder "
                                        "under the server's output root (serve --out)")
        targets = values.get("targets", "")
        if isinstance(targets, str) and targets:
            raise ConfigError("targets", 'a remote backend reads no file a client names: send the targets themselves, '
                                         '{"targets": [...]} (the add-on reads a local file and sends its contents)')
        if values.get("init_mesh", "") != "":
            raise ConfigError("init_mesh", "a remote backend reads no file a client names, and a mesh cannot travel to it yet: "
                                           "start from a mesh with a local backend")
        if values.get("refine_from", "") != "":
            values["refine_from"] = str(self.server_run(values["refine_from"]))
        weights = values.get("weights", "any" if self.allow_pickle_weights else "safetensors")
        if weights != "safetensors" and not self.allow_pickle_weights:
            raise ConfigError("weights", "this backend loads safetensors weights only (its operator did not pass "
                                         "--allow-pickle-weights); leave weights out or set it to safetensors")
        model = values.get("model", GenerationConfig.model)
        if isinstance(model, str):
            values["model"] = self.model(model)
        return {**values, "out": str(self.out_root), "weights": weights}

    def model(self, name: str) -> str:
        """A hub id as `hub:ID`, or the resolved folder of a model root's model named `name`."""
        if name.startswith(HUB_PREFIX):
            return name
        path = PurePath(name.replace("\\", "/"))
        if name.strip() and not path.is_absolute() and ".." not in path.parts and not name.startswith("~"):
            for root in self.model_roots:
                folder = (root / path).resolve()
                if folder.is_relative_to(root) and folder != root and folder.is_dir():
                    return str(folder)
            if HUB_ID.match(name):
                return HUB_PREFIX + name
        available = self.available_models()
        raise ConfigError("model", "must be a hub id (ORG/NAME) or a model folder this backend offers ("
                                   + (", ".join(available) if available else "its operator named none: serve --models DIR") + ")")

    def server_run(self, name: Any) -> Path:
        """The run folder this server made that `name` names (relative to the output root, as the
        events show it): a real folder directly in the root, or one variation of a variations run
        there (`RUN/s3`, `RUN/s3-refine-900`: RUN holds the server's variations.json); never a
        symlink, never a folder outside."""
        parts = re.split(r"[/\\]", name.strip().rstrip("/\\")) if isinstance(name, str) else []
        if 1 <= len(parts) <= 2 and all(part and part not in (".", "..") for part in parts):
            folder, parent = self.out_root, self.out_root
            for part in parts:
                parent, folder = folder, folder / part
                if folder.is_symlink() or not folder.is_dir() or folder.resolve().parent != parent.resolve():
                    break
            else:
                if len(parts) == 1 or (parent / VARIATIONS_INDEX).is_file():
                    return folder
        raise ConfigError("refine_from", "must name a run folder this backend made, as its events name it (the run's run_dir)")

    def available_models(self) -> list[str]:
        """The model folders (with a model_index.json) directly under the model roots, by name."""
        names = []
        for root in self.model_roots:
            try:
                names += [entry.name for entry in root.iterdir() if (entry / "model_index.json").is_file()
                          and (entry / "model_index.json").resolve().is_relative_to(root)]
            except OSError:
                continue
        return sorted(set(names))[:MAX_LISTED_MODELS]

    # ------------------------------------------------------------------ events
    def outgoing(self, event: dict[str, Any]) -> dict[str, Any]:
        """The event as the remote client gets it: a preview's or mesh's bytes in it, no server path."""
        if event.get("type") == "error":
            log.warning("to the remote client: error %s: %s %s", event.get("code"), event.get("message"), event.get("hint", ""))
        full = protocol.with_file_data(event, self.max_file_bytes)
        return {key: value if key in NOT_SENT else self.redact(value) for key, value in full.items()}

    def redact(self, value: Any) -> Any:
        """`value` with every path under a root relative to it and every other absolute path hidden."""
        if isinstance(value, str):
            for root in self._roots:  # ROOT/x -> x, ROOT itself -> .
                value = re.sub(re.escape(root) + r"(?:[/\\]|(?![\w.-]))", lambda match, root=root: "." if match[0] == root else "", value)
            return ABSOLUTE_PATH.sub(SERVER_PATH, value)
        if isinstance(value, dict):
            return {key: self.redact(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.redact(item) for item in value]
        return value
