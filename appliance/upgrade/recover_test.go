package upgrade

import (
	"strconv"
	"testing"

	"github.com/outpostdev/outpost/appliance/store"
)

func TestJudge(t *testing.T) {
	begin := func(steps int) store.JournalEntry {
		return store.JournalEntry{Step: 1, Name: "begin", State: store.StepStarted, Data: `{"from":4,"rotated":["api"],"steps":` + strconv.Itoa(steps) + `}`}
	}
	e := func(step int, name, state, data string) store.JournalEntry {
		return store.JournalEntry{Step: step, Name: name, State: state, Data: data}
	}
	tests := []struct {
		name    string
		entries []store.JournalEntry
		verdict string
		last    int
		applied int64
	}{
		{"nothing journaled", nil, verdictUntouched, 0, 0},
		{"killed at begin", []store.JournalEntry{begin(4)}, verdictRollback, 1, 0},
		{"killed before apply acted", []store.JournalEntry{
			begin(4), e(1, "begin", store.StepDone, ""),
			e(2, "start beside api", store.StepStarted, ""), e(2, "start beside api", store.StepDone, ""),
			e(3, "apply", store.StepStarted, ""),
		}, verdictRollback, 3, 0},
		{"killed after apply", []store.JournalEntry{
			begin(4), e(1, "begin", store.StepDone, ""),
			e(2, "start beside api", store.StepStarted, ""), e(2, "start beside api", store.StepDone, ""),
			e(3, "apply", store.StepStarted, ""), e(3, "apply", store.StepDone, "7"),
			e(4, "mark legacy volumes", store.StepStarted, ""),
		}, verdictRollback, 4, 7},
		{"every step done", []store.JournalEntry{
			begin(3), e(1, "begin", store.StepDone, ""),
			e(2, "apply", store.StepStarted, ""), e(2, "apply", store.StepDone, "7"),
			e(3, "mark legacy volumes", store.StepStarted, ""), e(3, "mark legacy volumes", store.StepDone, ""),
		}, verdictFinish, 3, 7},
		{"killed while rolling back", []store.JournalEntry{
			begin(3), e(1, "begin", store.StepDone, ""),
			e(2, "apply", store.StepStarted, ""), e(2, "apply", store.StepFailed, "job failed"),
			e(3, "undo start beside", store.StepStarted, ""),
		}, verdictRollback, 3, 0},
		{"failed step is not done", []store.JournalEntry{
			begin(2), e(1, "begin", store.StepDone, ""),
			e(2, "apply", store.StepStarted, ""), e(2, "apply", store.StepFailed, "x"),
		}, verdictRollback, 2, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := judge(tt.entries)
			if j.verdict != tt.verdict || j.last != tt.last || j.applied != tt.applied {
				t.Fatalf("judge = %s, last %d, applied %d; want %s, %d, %d", j.verdict, j.last, j.applied, tt.verdict, tt.last, tt.applied)
			}
			if j.verdict != verdictUntouched && (j.begin.From != 4 || len(j.begin.Rotated) != 1) {
				t.Fatalf("begin data %+v", j.begin)
			}
		})
	}
}
