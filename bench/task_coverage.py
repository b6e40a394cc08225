"""How much of a synthetic task's problem space SFT covers, with and without ``sft.num_problems``.

    python bench/task_coverage.py [CONFIG] [key=value ...]     # default: configs/countdown_tiny.yaml

Walks the training stream SFT reads (``sft.steps * sft.batch_size`` problems from the index it starts at)
and a long stretch of the stream rollouts read, and counts distinct problems by content. When an uncapped
SFT covers most of the space, RL's prompts are problems the init has already memorised; the
``sft.num_problems`` pool leaves the rest of the space to RL. The last line printed is JSON.
"""

from __future__ import annotations

import json
import sys

from arbor.core.config import load_config
from arbor.core.tasks import build_task
from arbor.core.tasks.split import ROLLOUT_SEEDS, SFT_SEEDS, problems_to_skip, stretch_start

SPACE_DRAWS = 200_000  # rollout-stream draws used to estimate the number of distinct training problems


def main(argv: list[str]) -> dict:
    config = argv[0] if argv and "=" not in argv[0] else "configs/countdown_tiny.yaml"
    cfg = load_config(config, argv[1:] if argv and "=" not in argv[0] else argv)
    task = build_task(cfg.task)
    space = {task.train_problem(ROLLOUT_SEEDS + i).key for i in range(SPACE_DRAWS)}
    first = stretch_start(SFT_SEEDS, cfg.sft.seed)
    uncapped = {
        task.train_problem(first + i, cfg.sft.difficulty_mix).key for i in range(cfg.sft.steps * cfg.sft.batch_size)
    }
    skip = problems_to_skip(cfg, task)
    result = {
        "distinct_training_problems": len(space),
        "uncapped_sft_problems": len(uncapped),
        "uncapped_sft_coverage": round(len(uncapped & space) / len(space), 3),
        "sft_num_problems": cfg.sft.num_problems,
        "left_for_rl": len(space - skip),
        "held_out": len(task.eval_problems()),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
