"""Front end: grammar, parse tree to AST, and `use` resolution."""
