"""Statistics that match R's pROC: AUC CIs, DeLong and bootstrap tests, diagnostic metrics, agreement, Table 1.

Convention throughout: a higher score means a case (label 1), as pROC's ``direction = "<"``; a
patient is called positive at ``score >= threshold`` (the study's rule: P >= 0.5).
"""
from __future__ import annotations

from alnvid.stats.agreement import (
                                    FleissKappaResult,
                                    KappaResult,
                                    McNemarResult,
                                    cohen_kappa,
                                    cohen_kappa_table,
                                    fleiss_kappa,
                                    fleiss_kappa_counts,
                                    mcnemar,
                                    mcnemar_table,
)
from alnvid.stats.bootstrap import (
                                    BootstrapCI,
                                    BootstrapTest,
                                    bootstrap_auc_ci,
                                    bootstrap_aucs,
                                    bootstrap_test,
                                    bootstrap_test_unpaired,
)
from alnvid.stats.cohort_table import CohortTable, cohort_table, mann_whitney
from alnvid.stats.delong import (
                                    AucCI,
                                    AucTest,
                                    DelongEstimate,
                                    delong_ci,
                                    delong_covariance,
                                    delong_test,
                                    delong_test_unpaired,
)
from alnvid.stats.metrics import (
                                    DiagnosticMetrics,
                                    Metric,
                                    clopper_pearson_ci,
                                    decision_metrics,
                                    diagnostic_metrics,
                                    wilson_ci,
)
from alnvid.stats.predictions import (
                                    Comparison,
                                    Predictions,
                                    PredictionSummary,
                                    compare_csvs,
                                    compare_predictions,
                                    load_predictions,
                                    summarize_predictions,
)
from alnvid.stats.roc import (
                                    STUDY_THRESHOLD,
                                    Coords,
                                    OperatingPoint,
                                    PrCurve,
                                    RocCurve,
                                    auc,
                                    average_precision,
                                    coords,
                                    operating_point,
                                    pr_curve,
                                    roc_curve,
                                    youden_point,
)

__all__ = [
    "STUDY_THRESHOLD", "AucCI", "AucTest", "BootstrapCI", "BootstrapTest", "CohortTable", "Comparison", "Coords",
    "DelongEstimate", "DiagnosticMetrics", "FleissKappaResult", "KappaResult", "McNemarResult", "Metric",
    "OperatingPoint", "PrCurve", "PredictionSummary", "Predictions", "RocCurve", "auc", "average_precision",
    "bootstrap_auc_ci", "bootstrap_aucs", "bootstrap_test", "bootstrap_test_unpaired", "clopper_pearson_ci",
    "cohen_kappa", "cohen_kappa_table", "cohort_table", "compare_csvs", "compare_predictions", "coords",
    "decision_metrics", "delong_ci", "delong_covariance", "delong_test", "delong_test_unpaired",
    "diagnostic_metrics", "fleiss_kappa", "fleiss_kappa_counts", "load_predictions", "mann_whitney", "mcnemar",
    "mcnemar_table", "operating_point", "pr_curve", "roc_curve", "summarize_predictions", "wilson_ci",
    "youden_point",
]
