"""Data: the built-in moving-digits task and UCF101 / HMDB51 video folders, as model-ready clips.

One entry point for every consumer (evaluation, export verification, energy reports, the demo):

- :func:`iter_eval_videos` yields :class:`VideoSample` (video_id, label, views (V, C, T, H, W)) with
  V = clips x crops normalised views per video, ready for ``model(views)``;
- :func:`class_names` gives the label names;
- :func:`build_dataset` gives a training / validation ``torch.utils.data.Dataset`` of (clip, label).

``spec`` is ``"moving-digits"`` (built in, no download) or the root folder of a UCF101 / HMDB51 copy.
"""

from svformer_deploy.data.api import (
    MOVING_DIGITS,
    VideoSample,
    data_spec,
    build_dataset,
    class_names,
    eval_video_count,
    iter_eval_videos,
    num_classes,
)

__all__ = ["MOVING_DIGITS", "VideoSample", "data_spec", "build_dataset", "class_names", "eval_video_count",
           "iter_eval_videos", "num_classes"]
