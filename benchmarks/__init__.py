"""Speed and memory benchmarks of glotta against Hugging Face tooling; see README.md."""
