"""The named choices of every option, in one module that imports nothing heavy.

The command line reads them here, so `fedsim ... --help` starts without importing JAX; the
modules that implement each choice import them from here too (one source of truth).
"""

ALGORITHMS = ("fedavg", "fedprox", "centralized", "local", "fedkl")
DELTA_ALGORITHMS = ("fedavg", "fedprox")   # the clients send deltas to an aggregator
SCHEDULES = ("constant", "inverse_time", "cosine")
LR_SCHEDULES = ("constant", "cosine")   # set by lr alone (inverse_time needs beta and gamma0)
SERVER_OPTIMIZERS = ("none", "sgd", "momentum", "adam")
AGGREGATORS = ("mean", "median", "trimmed_mean")
ACCOUNTANTS = ("rdp", "pld")   # dp-accounting's RDP and PLD accountants
SAMPLINGS = ("fixed", "poisson")   # m of K without replacement, or each client with probability q
ATTACKS = ("sign_flip", "scale", "noise")
GRAPHS = ("complete", "ring", "star")         # whom a client's KL-to-peers reference hears
MIXINGS = ("geometric", "sum_of_kls", "arithmetic")   # how the peers' policies are mixed
PEER_WEIGHTINGS = ("fixed", "returns")   # W as given, or tilted toward peers with high returns

# tabular instances and learners
REWARD_FORMS = ("additive", "convex")
WEIGHTINGS = ("uniform", "samples")
STARTS = ("uniform", "random")
INITS = ("zero", "random")
GRADIENTS = ("exact", "sampled")
LEARNERS = ("pg", "ppo")
ESTIMATORS = ("gpomdp", "reinforce")
REGULARIZERS = ("none", "entropy", "kl")

# MovieLens
MOVIELENS_RELEASES = ("ml-latest-small", "ml-100k", "ml-1m")
UPDATES = ("fitted_q", "soft_q", "policy_gradient")
MOVIELENS_ALGORITHMS = ("fedavg", "centralized", "local")   # the paper's comparison

# IMDb
IMDB_ALGORITHMS = ("fedrlhf", "as_released", "isolated", "centralized", "centralized_full",
                   "fedppo_kl")
IMDB_DATASETS = ("imdb", "synthetic")
IMDB_SHARDINGS = ("contiguous", "shuffled")
FLUENCY_SCORERS = ("frozen", "policy")
