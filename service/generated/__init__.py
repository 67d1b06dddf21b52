"""Code generated from protos/ by scripts/gen_protos.sh (make protos). Do not edit."""
