"""ProcGen score normalisation: (R - R_min) / (R_max - R_min).

Source: Cobbe et al. (2020), "Leveraging Procedural Generation to Benchmark Reinforcement
Learning", Appendix C, Table 2 (R_min, R_max per game and distribution). The paper
(Irie et al. 2022) uses the easy constants for the easy games and the hard ones for its
memory-distribution table (Appendix C.1).
"""

import numpy as np

# game: (easy R_min, easy R_max, hard R_min, hard R_max)
PROCGEN_RETURN_RANGES = {
    "bigfish":   (1.0, 40.0, 0.0, 40.0),
    "bossfight": (0.5, 13.0, 0.5, 13.0),
    "caveflyer": (3.5, 12.0, 2.0, 13.4),
    "chaser":    (0.5, 13.0, 0.5, 14.2),
    "climber":   (2.0, 12.6, 1.0, 12.6),
    "coinrun":   (5.0, 10.0, 5.0, 10.0),
    "dodgeball": (1.5, 19.0, 1.5, 19.0),
    "fruitbot":  (-1.5, 32.4, -0.5, 27.2),
    "heist":     (3.5, 10.0, 2.0, 10.0),
    "jumper":    (3.0, 10.0, 1.0, 10.0),
    "leaper":    (3.0, 10.0, 1.5, 10.0),
    "maze":      (5.0, 10.0, 4.0, 10.0),
    "miner":     (1.5, 13.0, 1.5, 20.0),
    "ninja":     (3.5, 10.0, 2.0, 10.0),
    "plunder":   (4.5, 30.0, 3.0, 30.0),
    "starpilot": (2.5, 64.0, 1.5, 35.0),
}


def constants_for(distribution_mode: str) -> str:
    """Which constants a distribution uses: "easy" for easy, "hard" otherwise (hard, memory)."""
    return "easy" if distribution_mode == "easy" else "hard"


def normalized_score(game: str, mean_return: float, which: str = "easy") -> float:
    """(mean_return - R_min) / (R_max - R_min) with the `which` ("easy" | "hard") constants."""
    easy_min, easy_max, hard_min, hard_max = PROCGEN_RETURN_RANGES[game]
    r_min, r_max = (easy_min, easy_max) if which == "easy" else (hard_min, hard_max)
    return (mean_return - r_min) / (r_max - r_min)


def aggregate_normalized(mean_returns: dict[str, float], which: str = "easy") -> float:
    """Mean over games of the normalised score (the paper reports it x 100)."""
    return float(np.mean([normalized_score(g, r, which) for g, r in mean_returns.items()]))
