"""The thin Omniverse Kit adapter: the only module of cosmos_sim that imports ``omni.*``.

Inside Kit (Isaac Sim, or any Kit app with ``omni.replicator.core``) it defines
:class:`CosmosSimWriter`, a Replicator ``Writer`` that hands every frame to
:class:`~cosmos_sim.bridge.omniverse.core.CosmosSimWriterCore`, and
:class:`CosmosSimExtension`, which registers the writer when the extension starts.
Outside Kit, importing this module works but :func:`register_writer` raises a clear
error.

Usage inside Kit::

    from cosmos_sim.bridge.omniverse.kit import register_writer
    register_writer()
    writer = rep.WriterRegistry.get("CosmosSimWriter")
    writer.initialize(output_dir="episodes.zarr", fps=30, action_low=[-1] * 7, action_high=[1] * 7,
                      step_callback=lambda: {"action": a, "state": q})
    writer.attach([rp_front, rp_wrist])
    ...; rep.orchestrator.step(); ...; writer.end_episode(success=True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cosmos_sim.bridge.omniverse.core import CosmosSimWriterCore, WriterConfig
from cosmos_sim.errors import ConfigError

try:  # guarded: these exist only inside a Kit process
    import omni.ext
    import omni.replicator.core as rep

    HAVE_KIT = True
except ImportError:  # plain Python: the core still works, the adapter does not
    HAVE_KIT = False

WRITER_NAME = "CosmosSimWriter"


def _need_kit() -> None:
    if not HAVE_KIT:
        raise ConfigError(
            "the Replicator writer runs inside Omniverse Kit (Isaac Sim); "
            "outside Kit use CosmosSimWriterCore or `cosmos-sim import replicator`",
            field="omni.replicator.core",
            expected="importable (run with Isaac Sim's python.sh)",
            found="not installed",
        )


if HAVE_KIT:

    class CosmosSimWriter(rep.Writer):
        """Replicator writer → cosmos_sim episode store (one store camera per render product)."""

        def __init__(
            self,
            output_dir: str,
            fps: float,
            action_low: Sequence[float],
            action_high: Sequence[float],
            step_callback: Callable[[], dict] | None = None,
            action_names: Sequence[str] = (),
            state_names: Sequence[str] = (),
            state_dim: int | None = None,
            cameras: dict[str, str] | None = None,
            distance_to_image_plane: bool = True,
            semantic_segmentation: bool = True,
            colorize_semantic_segmentation: bool = False,
            semantic_types: Sequence[str] = ("class",),
            classes: Sequence[str] = (),
            instruction: str = "",
            up_axis: str = "Z",
        ) -> None:
            self.annotators = ["rgb", "camera_params"]
            if distance_to_image_plane:
                self.annotators.append("distance_to_image_plane")
            if semantic_segmentation:
                self.annotators.append(
                    rep.AnnotatorRegistry.get_annotator(
                        "semantic_segmentation",
                        init_params={
                            "colorize": colorize_semantic_segmentation,
                            "semanticTypes": list(semantic_types),
                        },
                    )
                )
            self.data_structure = "renderProduct"  # the core also reads the other layouts
            config = WriterConfig(
                out=output_dir,
                fps=fps,
                action_low=action_low,
                action_high=action_high,
                action_names=action_names,
                state_names=state_names,
                state_dim=state_dim,
                cameras=cameras,
                depth=distance_to_image_plane,
                segmentation=semantic_segmentation,
                classes=classes,
                instruction=instruction,
                up_axis=up_axis,
            )
            self.core = CosmosSimWriterCore(config, step_callback)

        def write(self, data: dict) -> None:
            self.core.write(data)

        def set_step(self, action, state=None, reward: float = 0.0) -> None:
            self.core.set_step(action, state, reward)

        def end_episode(self, success: bool, instruction: str | None = None) -> int:
            return self.core.end_episode(success, instruction)

        def discard_episode(self) -> None:
            self.core.discard_episode()

        def on_final_frame(self) -> None:
            self.core.close()

    class CosmosSimExtension(omni.ext.IExt):
        """Kit extension: registers CosmosSimWriter on startup."""

        def on_startup(self, ext_id: str) -> None:
            register_writer()

        def on_shutdown(self) -> None:
            unregister = getattr(rep.WriterRegistry, "unregister", None)
            if unregister is not None:
                unregister(WRITER_NAME)


def register_writer() -> type:
    """Register CosmosSimWriter with Replicator's WriterRegistry (inside Kit only)."""
    _need_kit()
    rep.WriterRegistry.register(CosmosSimWriter)
    return CosmosSimWriter
