"""The analysis engine: a video in, highlights or workout steps out.

Framework-free on purpose: the analysis process, the command line and the
tests all call `VideoHighlightGenerator`. A video is cut into segments, a few
frames of each are sampled, and the one model (`model.runner`) is asked about
each segment in turn; while it works on one segment, the frames of the next
are already being decoded. What differs between kinds of analysis lives in
their classes (highlights.py, workout.py); the loop here is the same for all.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, List, Optional, Sequence, Tuple

from video_analysis.cancellation import CancelToken, Cancelled
from video_analysis.config import DEFAULT_MODEL
from video_analysis.engine.analysis import Analysis, Answers, SegmentAnswer, count_of, kept_answers
from video_analysis.engine.frame_sampling import FrameSampler, Seen
from video_analysis.engine.kinds import analysis_class
from video_analysis.engine.outputs import OutputRequest, Rendering, add_outputs
from video_analysis.engine.parameters import AnalysisKind
from video_analysis.engine.prompts import PromptsDoNotFit, prompts_problem
from video_analysis.model.runner import ModelLoadError, ModelRunner
from video_analysis.video import FrameReader, Segment, VideoError, VideoInfo, plan_segments, probe_video
from video_analysis.video.scenes import scene_segments

__all__ = ["VideoHighlightGenerator", "Cancelled", "VideoError", "ModelLoadError"]

# Called with (segments done, segments in all, a sentence) as the work goes on; 0 of 0 while the segments are
# still being planned (scene cut detection reads every frame first).
Progress = Callable[[int, int, str], None]
# Called with (the segment's position, 0-based; the model's answer) as each segment is answered.
Answered = Callable[[int, str], None]


def _no_progress(done: int, total: int, message: str) -> None:
    pass


def _no_answer(position: int, answer: str) -> None:
    pass


def _no_rendering(fraction: float, message: str) -> None:
    pass


def _finding_scenes(progress: Progress) -> Callable[[int, int], None]:
    """The cut detection's frames read, told as progress before the segments are known (0 of 0 segments),
    once per whole percent."""
    shown = [-1]

    def frames_read(done: int, frames: int) -> None:
        percent = 100 * done // max(frames, 1)
        if percent != shown[0]:
            shown[0] = percent
            progress(0, 0, f"Finding the video's scenes ({percent} % of its frames read)")
    frames_read(0, 1)  # said before the first frame is read
    return frames_read


class VideoHighlightGenerator:
    """Finds highlights or workout steps in a video with one vision-language model.

    `model` is a Hugging Face id or a local directory, or an already running
    `ModelRunner` to share one model between callers.
    """

    def __init__(self, model: "str | ModelRunner" = DEFAULT_MODEL):
        self.runner = model if isinstance(model, ModelRunner) else ModelRunner(model)

    @property
    def model_name(self) -> str:
        return self.runner.name

    def close(self) -> None:
        self.runner.close()

    # -- public API ----------------------------------------------------------
    def analyze(self, kind: "AnalysisKind | str", video_path: str, *, progress: Optional[Progress] = None,
                cancel: "CancelToken | threading.Event | None" = None, video_name: Optional[str] = None,
                video_info: Optional[VideoInfo] = None, answered: Optional[Answered] = None,
                resume: Sequence[str] = (), outputs: Optional[OutputRequest] = None,
                rendering: Optional[Rendering] = None, **parameters) -> dict:
        """Run the analysis of `kind` on the video and return its result object.

        `parameters` are the kind's (engine/parameters.py: defaults and limits; a ValueError
        names one out of bounds). `cancel` stops the work within a frame or a token (Cancelled);
        a threading.Event is taken as a token over it.
        `video_info` is a probe the caller already made of `video_path`, taken as it is;
        `video_name` names the video in the result when the probe is made here.
        `answered` hears each segment's answer as it comes (the jobs keep them on disk), and
        `resume` hands such answers back: the first len(resume) segments take them and are
        neither decoded nor sent to the model again, so the result is the one a run without
        the interruption gives.
        `outputs` asks for thumbnails and a reel (engine/outputs.py), made once the result is known and
        noted in it; `rendering` hears how far that has got.
        """
        analysis = analysis_class(kind).with_parameters(**parameters)
        if isinstance(cancel, threading.Event):
            cancel = CancelToken(cancel)
        started = time.perf_counter()
        cancel = cancel or CancelToken()
        info, answers = self._answers(analysis, video_path, video_name, video_info, progress or _no_progress,
                                      cancel, answered or _no_answer, list(resume))
        result = analysis.result(info, answers, self.model_name, round(time.perf_counter() - started, 3))
        if outputs is not None:
            add_outputs(analysis.kind, analysis.parameters, result, video_path, info, outputs, cancel,
                        rendering or _no_rendering)
            result["processing_time_seconds"] = round(time.perf_counter() - started, 3)  # the rendering too
        return result

    def generate_highlights(self, video_path: str, **options) -> dict:
        """Score every segment 1-10 and return the best as highlights (the contract's highlights object).

        `options`: as `analyze` takes them (progress, cancel, video_name, video_info and HighlightsParameters).
        """
        return self.analyze(AnalysisKind.HIGHLIGHTS, video_path, **options)

    def analyze_workout(self, video_path: str, **options) -> dict:
        """Name the exercise of every segment and merge runs into steps (the contract's workout object).

        `options`: as `analyze` takes them (progress, cancel, video_name, video_info and WorkoutParameters).
        """
        return self.analyze(AnalysisKind.WORKOUT, video_path, **options)

    # -- the segment loop ----------------------------------------------------
    def _answers(self, analysis: Analysis, video_path: str, video_name: Optional[str],
                 video_info: Optional[VideoInfo], progress: Progress, cancel: CancelToken,
                 answered: Answered, resume: List[str]) -> Tuple[VideoInfo, Answers]:
        """The model's answer for every segment; the reader and the model both check `cancel`."""
        cancel.raise_if_cancelled()
        self.runner.wait_until_loaded()
        # Checked at upload when the model was loaded by then; an upload taken while it loaded is checked here.
        problem = prompts_problem(self.runner.prompt_problem, analysis.kind, analysis.parameters)
        if problem is not None:
            raise PromptsDoNotFit(*problem)
        info = video_info or probe_video(video_path, video_name)
        parameters = analysis.parameters
        if parameters.segmentation == "scenes":  # one pass over every frame, then segments at the cuts
            segments = scene_segments(video_path, info, parameters.segment_duration, cancel,
                                      _finding_scenes(progress))
        else:
            segments = plan_segments(info.duration_seconds, parameters.segment_duration, info)
        total = len(segments)
        if len(resume) > total:
            raise ValueError(f"{len(resume)} answers to resume from, for a video of {total} segments")
        answers = kept_answers(analysis, info, resume, segments)
        first = len(answers)
        progress(first, total, f"Reading {count_of(total, 'segment')}")
        if first == total:
            return info, answers
        in_flight = None
        try:
            with FrameReader(video_path, info, max_edge=self.runner.image_size, cancel=cancel) as reader:
                sampler = FrameSampler(reader, parameters.frames_per_segment, parameters.frame_selection)
                seen = self._seen_before(sampler, segments, answers)
                frames = sampler.frames(segments[first])
                for position in range(first, total):
                    segment = segments[position]
                    if sampler.unchanged(frames, seen):
                        answer = SegmentAnswer(segment, seen.answer, 0, seen.segment_index)
                        if position + 1 < total:
                            frames = sampler.frames(segments[position + 1])
                        said = f"Segment {position + 1} of {total} unchanged: the answer of segment " \
                               f"{seen.segment_index} holds"
                    else:
                        in_flight = self.runner.submit(frames.images, analysis.user_prompt,
                                                       system_prompt=analysis.system_prompt,
                                                       max_tokens=parameters.max_tokens, cancel=cancel)
                        asked = frames
                        # Decode the next segment's frames while the model works on this one.
                        if position + 1 < total:
                            frames = sampler.frames(segments[position + 1])
                        text = in_flight.result()
                        in_flight = None
                        answer = SegmentAnswer(segment, text, len(asked.images))
                        seen = Seen(asked, text)
                        said = f"Analyzed segment {position + 1} of {total}"
                    answers.append(answer)
                    answered(position, answer.stored())
                    progress(position + 1, total, said)
        except BaseException:
            cancel.cancel()  # a failed read must not leave the model working for nobody
            if in_flight is not None:
                try:
                    in_flight.result()
                except BaseException:  # noqa: BLE001  (the first error is the one to report)
                    pass
            raise
        return info, answers

    @staticmethod
    def _seen_before(sampler: FrameSampler, segments: List[Segment], answers: Answers) -> Optional[Seen]:
        """After a resume, what the model last saw: the frames of the segment the last kept answer came from,
        chosen again (the same choice), so the run goes on as one without the interruption would."""
        if not answers or answers[-1].frames_analyzed is None:
            return None
        last = answers[-1]
        asked = segments[(last.reused_from or last.segment.index) - 1]
        return Seen(sampler.frames(asked), last.text)
