"""Let a CUDA-only torchvision wheel import on a CPU-only torch.

The only torchvision wheel that pins torch==2.13.0 is a CUDA build; its compiled
extension cannot load on the CPU torch, and its Python side then fails with
``operator torchvision::nms does not exist`` (see shared ENVIRONMENT.md). Defining
the two op schemas its meta registrations expect, before torchvision is first
imported, lets torchvision's transforms (and so open_clip, timm, transformers and
diffusers) import; compiled ops such as nms stay unavailable.

``install_torchvision_shim.py`` copies this module into site-packages together with
a ``.pth`` line that imports it, *only* when torchvision fails in exactly that way.
Importing it costs nothing: it hooks the first ``import torchvision``.
"""
import sys

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library = None  # kept alive: dropping the Library object unregisters the schemas


class _DefineOpsBeforeTorchvision:
    def find_spec(self, name, path=None, target=None):
        global _library
        if name != "torchvision":
            return None
        sys.meta_path.remove(self)
        import torch

        _library = torch.library.Library("torchvision", "DEF")
        for schema in _SCHEMAS:
            _library.define(schema)
        return None  # the ordinary finders import torchvision itself


sys.meta_path.insert(0, _DefineOpsBeforeTorchvision())
