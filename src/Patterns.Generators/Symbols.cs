using Microsoft.CodeAnalysis;

namespace Patterns.Generators;

/// <summary>What the generators ask of the types they register.</summary>
internal static class Symbols
{
    /// <summary>Only types the generated class can name: not private or protected, nor nested in such a type.</summary>
    public static bool IsReachable(INamedTypeSymbol type)
    {
        for (ISymbol? symbol = type; symbol is INamedTypeSymbol named; symbol = symbol.ContainingType)
        {
            if (named.DeclaredAccessibility is Accessibility.Private or Accessibility.Protected or Accessibility.ProtectedAndInternal)
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>The type's name as generated code writes it: <c>global::</c>-qualified.</summary>
    public static string Full(ITypeSymbol type) => type.ToDisplayString(SymbolDisplayFormat.FullyQualifiedFormat);
}
