"""Loading the model with this CPU's speed-ups: the first module to import mlx (after OpenBLAS).

On Linux CPU: OpenBLAS before mlx (≈30× faster matrix multiply than the
bundled reference BLAS), float32 weights, no image splitting, the vision
tower's softmax and GELU with powers of two (fast_activations) and the frames
of a request split across one CPU stream per core (parallel_vision). On macOS
mlx's Metal defaults are kept.
"""
from __future__ import annotations

import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any, List, Optional

from video_analysis.model.memory import reuse_freed_memory
from video_analysis.model.openblas import preload_openblas

reuse_freed_memory()
preload_openblas()

import mlx.core as mx  # noqa: E402  (after OpenBLAS, on purpose)

from video_analysis.model import fast_activations, parallel_vision  # noqa: E402
from video_analysis.model.errors import HubUnreachable, ModelLoadError  # noqa: E402

log = logging.getLogger(__name__)

# Models whose vision tower is the SigLIP-style encoder that fast_activations
# and parallel_vision were written and checked against.
_SIGLIP_VISION_MODEL_TYPES = {"smolvlm", "idefics3"}


@dataclass
class LoadedModel:
    model: Any
    processor: Any
    device: str  # "cpu" or "gpu"
    image_size: Optional[int]  # the longest edge the processor feeds the vision tower
    vision_streams: int = 1  # CPU streams the vision tower is split across (parallel_vision)
    fast_activation_layers: int = 0  # vision layers using fast_activations
    seconds: float = 0.0  # how long loading took


def _looks_like_a_path(model_ref: str) -> bool:
    """A Hugging Face id is `org/name`: one slash, no leading dot, slash or tilde."""
    return model_ref.startswith(("/", ".", "~")) or model_ref.count("/") > 1 or os.sep != "/" and os.sep in model_ref


def current_device() -> str:
    return "gpu" if mx.default_device() == mx.gpu else "cpu"


def load_model(model_ref: str, name: str) -> LoadedModel:
    """Load `model_ref` (a Hugging Face id or a local directory) on the calling thread; ModelLoadError saying why.

    HubUnreachable (a ModelLoadError) when the model had to be downloaded and the Hub could not be
    reached: the one failure that may go away by itself. Call it on the thread that will generate:
    mlx streams belong to the thread that made them.
    """
    started = time.perf_counter()
    if _looks_like_a_path(model_ref) and not os.path.exists(model_ref):
        raise ModelLoadError(f"Model '{name}' could not be loaded: the directory {model_ref} does not exist. Set "
                             "MODEL to a directory that holds the model, or to a Hugging Face id such as org/name.")
    try:
        from mlx_vlm import load

        model, processor = load(model_ref)
    except Exception as error:  # noqa: BLE001
        unreachable = _hub_unreachable(error, model_ref, name)
        if unreachable is not None:
            raise unreachable from None
        raise ModelLoadError(f"Model '{name}' could not be loaded: {_first_line(error, model_ref, name)}") from None
    loaded = LoadedModel(model, processor, current_device(), _longest_edge(processor))
    if loaded.device == "cpu":
        # float32 on CPU: bfloat16/float16 are several times slower there.
        model.set_dtype(mx.float32)
        image_processor = getattr(processor, "image_processor", None)
        if image_processor is not None and hasattr(image_processor, "do_image_splitting"):
            # Splitting a frame into tiles multiplies vision work ~13x.
            image_processor.do_image_splitting = False
        if getattr(model.config, "model_type", None) in _SIGLIP_VISION_MODEL_TYPES:
            # mlx's CPU exp/tanh are slow and single-core: cheaper formulas, then every core.
            loaded.fast_activation_layers = fast_activations.enable(model.vision_model)
            loaded.vision_streams = parallel_vision.enable(model)
            fast_activations.guard_against_overflow(model)
    mx.eval(model.parameters())
    loaded.seconds = time.perf_counter() - started
    log.info("Loaded model %s in %.2f s on %s (vision tower on %d streams, %d layers with fast activations)",
             name, loaded.seconds, loaded.device, loaded.vision_streams, loaded.fast_activation_layers)
    return loaded


def _first_line(error: BaseException, model_ref: str, name: str) -> str:
    """The error's first line, with a local model's path replaced by its name (no server path in an answer)."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if os.path.isabs(model_ref) or os.path.isdir(model_ref):
        reason = reason.replace(os.path.abspath(model_ref), name).replace(model_ref, name)
    return reason


def _chain(error: BaseException) -> List[BaseException]:
    """The error and those it was raised from or while handling, outermost first."""
    seen: List[BaseException] = []
    while error is not None and error not in seen and len(seen) < 20:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


def _network_errors() -> tuple:
    """What a failed connection raises: the standard library's, and the HTTP clients' already imported (the
    Hub's client was httpx, then httpx2; requests before that)."""
    kinds = [ConnectionError, TimeoutError, socket.gaierror]
    for module, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                          ("requests", ("ConnectionError", "Timeout"))):
        found = sys.modules.get(module)
        kinds.extend(getattr(found, attribute) for attribute in names if hasattr(found, attribute))
    return tuple(kinds)


def _hub_unreachable(error: BaseException, model_ref: str, name: str) -> Optional[HubUnreachable]:
    """A HubUnreachable saying what to do when `error` means the Hub could not be reached; None otherwise.

    huggingface_hub raises LocalEntryNotFoundError when the model is not in its cache and the Hub did
    not answer (from OfflineModeIsEnabled under HF_HUB_OFFLINE=1, from the connection's error
    otherwise); a download cut off half-way raises the connection's error itself. A repository that
    does not exist, or needs a token, is not retried.
    """
    try:
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled
    except ImportError:  # an mlx-vlm without the Hub's client: only local directories load
        return None
    chain = _chain(error)
    where = (f"Model '{name}' is not on this machine (neither a directory nor in the Hugging Face cache), and ")
    if any(isinstance(link, OfflineModeIsEnabled) for link in chain):
        return HubUnreachable(
            where + "downloads are turned off (HF_HUB_OFFLINE is set). Set MODEL to a local directory that holds "
                    "the model, or put the model in the Hugging Face cache, or unset HF_HUB_OFFLINE.")
    network = _network_errors()

    def server_trouble(link: BaseException) -> bool:  # the Hub answered, but could not serve it now
        status = getattr(getattr(link, "response", None), "status_code", None)
        return isinstance(link, HfHubHTTPError) and isinstance(status, int) and (status >= 500 or status == 429)

    causes = [link for link in chain if isinstance(link, network) or server_trouble(link)]
    if not causes and not any(isinstance(link, LocalEntryNotFoundError) for link in chain):
        return None
    detail = _first_line(causes[-1], model_ref, name)[:120] if causes else "no answer"
    return HubUnreachable(
        where + f"the Hugging Face Hub could not be reached to download it ({detail}). If this machine has no "
                "network, set MODEL to a local directory that holds the model, or put the model in the Hugging "
                "Face cache; otherwise check its network connection or proxy.")


def release_thread_streams() -> None:
    """Release the calling thread's mlx streams: a thread that generated must, or the process aborts at exit."""
    clear = getattr(mx, "clear_streams", None)
    if clear is not None:
        clear()


def _longest_edge(processor) -> Optional[int]:
    image_processor = getattr(processor, "image_processor", None)
    for attribute in ("max_image_size", "size"):
        value = getattr(image_processor, attribute, None)
        if isinstance(value, dict) and value.get("longest_edge"):
            return int(value["longest_edge"])
    return None
