#!/bin/bash
# llm4seg demo --fewshot 2 timed with --engine torch, then auto from an empty cache, then auto cached
# (a fresh LLM4SEG_HOME each; empties ~/.cache/llm4seg/openvino). Run alone: bench/quiet.sh bench/demo_fewshot_time.sh
cd "$(dirname "$0")/.."
for mode in torch auto-empty auto-cached; do
  rm -rf /tmp/demohome; export LLM4SEG_HOME=/tmp/demohome
  eng=auto; [ $mode = torch ] && eng=torch
  [ $mode = auto-empty ] && rm -rf ~/.cache/llm4seg/openvino
  t0=$(date +%s.%N)
  .venv/bin/llm4seg demo --fewshot 2 --engine $eng -q > /tmp/demo_$mode.log 2>&1; rc=$?
  t1=$(date +%s.%N)
  echo "$mode: rc $rc, $(echo "$t1 - $t0" | bc) s; $(grep -i "dice\|fast CPU" /tmp/demo_$mode.log | head -4 | tr '\n' ' ')"
done
