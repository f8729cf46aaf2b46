package credential

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestPassfileLineEscapesSeparators(t *testing.T) {
	assert.Equal(t, `*:*:*:o\:neil:p\\a\:ss'w d`, PassfileLine("o:neil", `p\a:ss'w d`))
}
