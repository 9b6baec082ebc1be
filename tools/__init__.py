"""Maintainer tools: benchmarks, the GPU check, the README's screenshot. Run from the
repository's top as modules (python -m tools.bench), or through make."""
