"""Speed benchmarks of glotta against Hugging Face tooling (GitHub issue 3); see README.md."""
