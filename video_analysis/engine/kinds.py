"""Which class runs each kind of analysis (the engine's facade and the job queue look it up here)."""
from __future__ import annotations

from typing import Dict, Type

from video_analysis.engine.analysis import Analysis
from video_analysis.engine.highlights import HighlightsAnalysis
from video_analysis.engine.parameters import AnalysisKind
from video_analysis.engine.workout import WorkoutAnalysis

ANALYSES: Dict[AnalysisKind, Type[Analysis]] = {
    AnalysisKind.HIGHLIGHTS: HighlightsAnalysis,
    AnalysisKind.WORKOUT: WorkoutAnalysis,
}


def analysis_class(kind: "AnalysisKind | str") -> Type[Analysis]:
    """The class for `kind`; ValueError for a kind there is none of."""
    return ANALYSES[AnalysisKind(kind)]
