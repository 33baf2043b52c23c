"""Media: images (:mod:`.images`), video files (:mod:`.video`), masks (:mod:`.masks`), colour
(:mod:`.color`) and the frames folder of an animation (:mod:`.frames`).

The image and video functions are re-exported here: ``jaxdream.media.load_image``,
``jaxdream.media.save_image``, ``jaxdream.media.read_settings``, ``jaxdream.media.VideoReader``...
"""

from .images import (IMAGE_FORMATS, TEMP_TAG, atomic_write, check_not_input, check_output, check_space, file_sha256,
                     fit_size,
                     image_shape, load_image, read_settings, remove_stale_temps, resize, save_image, to_uint8)
from .video import (VIDEO_FORMATS, AudioInfo, VideoInfo, VideoReader, check_animation_output, has_audio,
                    layout_channels, probe_audio, probe_video, write_video)

__all__ = ["IMAGE_FORMATS", "TEMP_TAG", "atomic_write", "check_not_input", "check_output", "check_space", "file_sha256",
           "fit_size",
           "image_shape", "load_image", "read_settings", "remove_stale_temps", "resize", "save_image", "to_uint8",
           "VIDEO_FORMATS", "AudioInfo", "VideoInfo", "VideoReader", "check_animation_output", "has_audio",
           "layout_channels", "probe_audio", "probe_video", "write_video"]
