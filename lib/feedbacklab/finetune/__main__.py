"""``accelerate launch [--multi_gpu --num_processes N] -m feedbacklab.finetune METHOD ...``: see :mod:`.distributed`."""
from feedbacklab.finetune.distributed import main

main()
