"""FedRLHF's IMDb experiment (issue 15, in progress): the reviews and the clients' shards
(data), a tokenizer, and the reward's sentiment classifier; the language model, the fluency
reward and sequence PPO come next."""
