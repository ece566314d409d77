"""The command line: `python video_highlight_generator.py VIDEO [--workout] ...` prints what the engine found."""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from video_analysis.engine.analyzer import DEFAULT_MAX_TOKENS, VideoHighlightGenerator
from video_analysis.model.runner import DEFAULT_MODEL, ModelLoadError
from video_analysis.video.frames import VideoError


def _summary(result: dict, workout: bool) -> str:
    video = result["video"]
    lines = [f"{video['filename']}: {video['duration_seconds']:.1f} s, {result['total_segments_analyzed']} segments "
             f"analysed in {result['processing_time_seconds']:.1f} s"]
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
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    from tqdm import tqdm

    parser = argparse.ArgumentParser(description="Find highlights (or workout steps) in a video with SmolVLM2.")
    parser.add_argument("video")
    parser.add_argument("--workout", action="store_true", help="break a workout into exercise steps")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="Hugging Face id or local directory")
    parser.add_argument("--segment-duration", type=float, help="seconds per segment (10, workout 15)")
    parser.add_argument("--frames-per-segment", type=int, default=8)
    parser.add_argument("--min-significance", type=int, default=6)
    parser.add_argument("--max-highlights", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    parser.add_argument("--json", metavar="OUT", help="write the result object to this file")
    args = parser.parse_args(argv)

    generator = VideoHighlightGenerator(args.model)
    bar = tqdm(total=0, unit="segment", file=sys.stderr, desc="analysing")

    def progress(done: int, total: int, message: str) -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix_str(message, refresh=True)

    try:
        if args.workout:
            result = generator.analyze_workout(
                args.video, segment_duration=args.segment_duration or 15,
                frames_per_segment=args.frames_per_segment, max_tokens=args.max_tokens, progress=progress,
            )
        else:
            result = generator.generate_highlights(
                args.video, min_significance=args.min_significance, max_highlights=args.max_highlights,
                segment_duration=args.segment_duration or 10, frames_per_segment=args.frames_per_segment,
                max_tokens=args.max_tokens, progress=progress,
            )
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
    print(_summary(result, args.workout))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(result, out, indent=2)
    return 0

