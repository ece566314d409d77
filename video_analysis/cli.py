"""The command line: `python video_highlight_generator.py VIDEO [--workout] ...` prints what the engine found."""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional, get_args

from pydantic import ValidationError

from video_analysis.config import DEFAULT_MODEL
from video_analysis.engine.analyzer import VideoHighlightGenerator
from video_analysis.engine.outputs import OutputRequest
from video_analysis.engine.parameters import AnalysisKind, HighlightsParameters, WorkoutParameters
from video_analysis.model.errors import ModelLoadError
from video_analysis.video import VideoError


def _default(parameters, name: str):
    return parameters.model_fields[name].default


def _problems(error: ValidationError) -> str:
    """"--max-tokens: Input should be less than or equal to 1024", one per bad option."""
    return "; ".join(f"--{str(problem['loc'][0]).replace('_', '-')}: {problem['msg']}" for problem in error.errors())


def _summary(result: dict, workout: bool, outputs: OutputRequest) -> str:
    video = result["video"]
    rows = result["segment_analyses" if workout else "all_analyses"]
    sent = sum(row["frames_analyzed"] or 0 for row in rows)
    reused = sum(row["reused_from"] is not None for row in rows)
    lines = [f"{video['filename']}: {video['duration_seconds']:.1f} s, {result['total_segments_analyzed']} segments "
             f"analysed in {result['processing_time_seconds']:.1f} s ({sent} frames sent to the model, "
             f"{reused} unchanged segments answered again without it)"]
    if workout:
        for step in result["exercise_steps"]:
            lines.append(f"  {step['timestamp_formatted']}  {step['exercise_name']}")
        if not result["exercise_steps"]:
            lines.append("  no exercise found")
    else:
        for item in result["highlights"]:
            lines.append(f"  {item['timestamp_formatted']}  {item['significance_score']}/10  {item['description']}")
        if not result["highlights"]:
            lines.append(f"  no segment scored {result['settings']['min_significance']} or more")
    return "\n".join(lines + _outputs(result, outputs))


def _outputs(result: dict, outputs: OutputRequest) -> List[str]:
    """Where the thumbnails and the reel were written, or why there is no reel."""
    lines = []
    items = result["exercise_steps" if "exercise_steps" in result else "highlights"]
    made = sum(1 for item in items if item.get("thumbnail"))
    if outputs.thumbnails_dir is not None:
        lines.append(f"{made} thumbnail{'' if made == 1 else 's'} in {outputs.thumbnails_dir}")
    if result.get("reel"):
        reel = result["reel"]
        lines.append(f"reel: {outputs.reel_path} ({reel['duration']:.1f} s, {reel['size'] / 1e6:.1f} MB)")
    elif result.get("reel_refused"):
        lines.append(result["reel_refused"])
    return lines


def main(argv: Optional[List[str]] = None) -> int:
    from tqdm import tqdm

    parser = argparse.ArgumentParser(description="Find highlights (or workout steps) in a video with SmolVLM2.")
    parser.add_argument("video")
    parser.add_argument("--workout", action="store_true", help="break a workout into exercise steps")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="Hugging Face id or local directory")
    parser.add_argument("--segment-duration", type=float,
                        help=f"seconds per segment ({_default(HighlightsParameters, 'segment_duration')}, "
                             f"workout {_default(WorkoutParameters, 'segment_duration')})")
    for name in ("frames_per_segment", "min_significance", "max_highlights", "max_tokens"):
        field = HighlightsParameters.model_fields[name]
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=field.default,
                            help=field.description.rstrip(".") + "; default %(default)s")
    for name in ("segmentation", "frame_selection"):
        field = HighlightsParameters.model_fields[name]
        parser.add_argument("--" + name.replace("_", "-"), choices=get_args(field.annotation), default=field.default,
                            help=field.description + " Default %(default)s.")
    field = WorkoutParameters.model_fields["reel_seconds_per_step"]
    parser.add_argument("--reel-seconds-per-step", type=int, default=field.default,
                        help=field.description.rstrip(".") + " (workout); default %(default)s")
    parser.add_argument("--reel", metavar="OUT.mp4", help="also render the highlights (or steps) into this MP4")
    parser.add_argument("--thumbnails", metavar="DIR", help="also write a JPEG per highlight (or step) here: 0.jpg, ...")
    parser.add_argument("--json", metavar="OUT", help="write the result object to this file")
    args = parser.parse_args(argv)
    kind = AnalysisKind.WORKOUT if args.workout else AnalysisKind.HIGHLIGHTS
    # The options this kind takes; one not given (None) is left to the kind's default.
    parameters = {name: getattr(args, name) for name in kind.parameters.model_fields
                  if getattr(args, name, None) is not None}
    parameters["reel"] = args.reel is not None
    outputs = OutputRequest(args.thumbnails, args.reel)
    try:
        kind.parameters(**parameters)  # before the model loads: a bad option is told at once
    except ValidationError as error:
        print(f"error: {_problems(error)}", file=sys.stderr)
        return 2

    generator = VideoHighlightGenerator(args.model)
    bar = tqdm(total=0, unit="segment", file=sys.stderr, desc="analysing")

    def progress(done: int, total: int, message: str) -> None:
        if total:  # 0 while the segments are planned (finding the scenes)
            bar.total = total
            bar.n = done
        bar.set_postfix_str(message, refresh=True)

    def rendering(fraction: float, message: str) -> None:  # the same bar, in percent of the rendering
        if bar.unit != "%":
            bar.set_description("rendering")
            bar.unit, bar.total = "%", 100
        bar.n = int(100 * fraction)
        bar.set_postfix_str(message, refresh=True)

    try:
        result = generator.analyze(kind, args.video, progress=progress, rendering=rendering, outputs=outputs,
                                   **parameters)
    except (VideoError, ModelLoadError, ValueError) as error:
        bar.close()
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        bar.close()
        print("cancelled", file=sys.stderr)
        return 130
    finally:
        generator.close()
    bar.close()
    print(_summary(result, kind is AnalysisKind.WORKOUT, outputs))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(result, out, indent=2)
    return 0


if __name__ == "__main__":  # python -m video_analysis.cli, as video_highlight_generator.py
    sys.exit(main())
