# Does a decode step's pace belong to its engine or to the set of CUDA graphs it replays? (reports/pace-keep-h100/:
# the third engine of a bench-engine process stands apart in its graph-replayed decode steps only, at the same
# addresses and on the same memory as the others.) Three bench-engine processes of qwen2.5-1.5b, the decode points
# of pace-keep-h100 and one small prefill: four engines, each timing every decode point on three graph sets
# (captured at start-up, then twice anew: --recapture 2); one engine timing them on eight sets; six engines with one
# set each, as pace-keep-h100 measured them, for comparison on this card.
set -u
source scripts/device/prep.sh
begin ${LIMIT:-200}
graph_set_bench 120 engines4-recapture2 --engines 4 --recapture 2
graph_set_bench 120 engine1-recapture7 --engines 1 --recapture 7
graph_set_bench 120 engines6 --engines 6
cat $OUT/logs/times
