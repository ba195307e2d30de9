"""The generation engine: Wan pipelines behind the `Runner` seam."""

import logging


class _NoClipProcessorFallbackNotice(logging.Filter):
    """Drops transformers' notice that `CLIPImageProcessor` falls back to its PIL backend.

    diffusers' Wan image-to-video pipeline imports `CLIPImageProcessor` when its module loads,
    so every process that loads the engine logged "`CLIPImageProcessor` requires torchvision",
    even servers that never see an image. The PIL backend is the processor the Wan checkpoints
    were published with (the default before transformers 5), and torchvision is deliberately not a
    dependency, so the notice asks for nothing an operator should do. Only this one message is
    dropped; the filter sits on the one transformers logger that emits it, ahead of the import
    that triggers it (every engine module is imported after this package).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("`CLIPImageProcessor` requires torchvision")


logging.getLogger("transformers.utils.import_utils").addFilter(_NoClipProcessorFallbackNotice())
