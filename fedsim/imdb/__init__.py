"""FedRLHF's IMDb experiment (issue 15, in progress): the reviews, a tokenizer, and the clients'
shards; the language model, the reward and sequence PPO come next."""
