"""`tether eval agentdojo`: AgentDojo's prompt-injection benchmark replayed, without a model,
through a Tether task per episode (suites.py loads the benchmark, replay.py plays an episode,
report.py adds them up)."""
