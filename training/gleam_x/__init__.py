"""GLEAM-X training and evaluation: simulated pairs, the verdict model's calibration, fine-tuning records,
LoRA fine-tuning of a multimodal LLM, evaluation and the benchmark.

- :mod:`.pairs`: positive and hard-negative query/reference pairs simulated over any map;
- :mod:`.calibration`: fit the evidence backend's verdict model on procedural worlds;
- :mod:`.records`: GLEAM-X fine-tuning records (images, instruction, bilingual target, verdict);
- :mod:`.lora`: LoRA fine-tuning with peft;
- :mod:`.evaluate`: match accuracy, precision / recall, Sentence-BERT similarity, faithfulness;
- :mod:`.bench`: the benchmark over a real map (``python -m training.gleam_x.bench --map ...``).
"""
