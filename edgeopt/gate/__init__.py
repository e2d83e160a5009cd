"""`edgeopt gate`: budgets + facts -> verdicts (``checks``, pure), their renderings (``render``),
the facts gathered from artifacts and reports (``facts``), baselines (``baseline``) and the run (``run``)."""
