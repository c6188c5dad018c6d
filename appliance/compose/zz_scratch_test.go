package compose

import (
	"fmt"
	"testing"

	"github.com/compose-spec/compose-go/v2/schema"
)

func TestScratchPaths(t *testing.T) {
	for _, p := range schema.AttributePaths() {
		fmt.Println(p)
	}
}
