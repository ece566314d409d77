"""Highlights: every segment scored 1-10, the best of them returned."""
from __future__ import annotations

from video_analysis.engine.analysis import Analysis, Answers, count_of
from video_analysis.engine.answers import highlight_description, parse_significance
from video_analysis.engine.parameters import AnalysisKind, HighlightsParameters
from video_analysis.video.probe import VideoInfo
from video_analysis.video.timecode import format_range


class HighlightsAnalysis(Analysis):
    kind = AnalysisKind.HIGHLIGHTS
    parameters: HighlightsParameters

    def result(self, info: VideoInfo, answers: Answers, model: str, seconds: float) -> dict:
        analyses = self._per_segment(answers, "significance_score", parse_significance)
        highlights = [
            {
                "start_time": a["start_time"],
                "end_time": a["end_time"],
                "timestamp_formatted": format_range(a["start_time"], a["end_time"]),
                "significance_score": a["significance_score"],
                "description": highlight_description(a["analysis"]),
            }
            for a in self._best(analyses)
        ]
        p = self.parameters
        return {
            **self._header(info, seconds, len(analyses)),
            "highlights_found": len(highlights),
            "settings": self._settings(model, min_significance=p.min_significance, max_highlights=p.max_highlights),
            "highlights": highlights,
            "all_analyses": analyses,
        }

    def _best(self, analyses: list) -> list:
        """Scored at least min_significance, highest first (earlier first on a tie), at most max_highlights."""
        lowest = self.parameters.min_significance
        scored = [a for a in analyses if a["significance_score"] is not None and a["significance_score"] >= lowest]
        scored.sort(key=lambda a: (-a["significance_score"], a["start_time"]))
        return scored[:self.parameters.max_highlights]

    @classmethod
    def found(cls, result: dict) -> str:
        return count_of(result["highlights_found"], "highlight")
