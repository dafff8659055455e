package xmlrpc

import (
	"fmt"
	"time"
)

// TypeName names the XML-RPC type of a value as Decode returns it ("string",
// "int", "struct", ...), for messages about a value of the wrong type.
func TypeName(v any) string {
	switch v.(type) {
	case nil:
		return "nil"
	case string:
		return "string"
	case int64:
		return "int"
	case bool:
		return "boolean"
	case float64:
		return "double"
	case []byte:
		return "base64"
	case time.Time:
		return "dateTime"
	case map[string]any:
		return "struct"
	case []any:
		return "array"
	}
	return fmt.Sprintf("%T", v)
}
