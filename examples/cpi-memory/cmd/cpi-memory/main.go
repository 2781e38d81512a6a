// Command cpi-memory is the CPI plugin of the in-memory example cloud.
package main

import (
	"github.com/compleat/compleat/cpi"

	"example.com/cpi-memory/memory"
)

func main() { cpi.Main(memory.New) }
