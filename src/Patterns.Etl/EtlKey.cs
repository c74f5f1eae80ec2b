using System.Linq.Expressions;

namespace Patterns.Etl;

/// <summary>Turns a key written as a lambda (<c>o =&gt; o.Id</c>, <c>o =&gt; new { o.Region, o.Id }</c>) into the schema columns it names.</summary>
/// <remarks>Reads the expression's members only (it is never compiled), so it is safe under trimming and native AOT.</remarks>
internal static class EtlKey
{
    public static string[] Columns<T>(EtlSchema<T> schema, Expression<Func<T, object?>> key)
    {
        ArgumentNullException.ThrowIfNull(schema);
        ArgumentNullException.ThrowIfNull(key);
        var body = Strip(key.Body);
        IReadOnlyList<Expression> parts = body is NewExpression created ? created.Arguments : [body];
        var columns = new string[parts.Count];
        for (var i = 0; i < parts.Count; i++)
        {
            if (Strip(parts[i]) is not MemberExpression { Expression: ParameterExpression } member)
            {
                throw new ArgumentException($"The key {key} must name properties of {typeof(T).Name}: o => o.Id, or o => new {{ o.Region, o.Id }} for a key of several columns.", nameof(key));
            }

            columns[i] = Match(schema, member.Member.Name, key);
        }

        return columns;
    }

    private static Expression Strip(Expression expression)
    {
        while (expression is UnaryExpression { NodeType: ExpressionType.Convert or ExpressionType.ConvertChecked } convert)
        {
            expression = convert.Operand;
        }

        return expression;
    }

    /// <summary>The column named like the property: the same name in any case, or the same once underscores are dropped (<c>CustomerId</c> is <c>customer_id</c>).</summary>
    private static string Match<T>(EtlSchema<T> schema, string property, Expression key)
    {
        var columns = schema.Columns;
        if (columns.FirstOrDefault(c => string.Equals(c.Name, property, StringComparison.OrdinalIgnoreCase)) is { } exact)
        {
            return exact.Name;
        }

        var matches = columns.Where(c => string.Equals(c.Name.Replace("_", string.Empty, StringComparison.Ordinal), property, StringComparison.OrdinalIgnoreCase)).ToList();
        return matches.Count == 1
            ? matches[0].Name
            : throw new ArgumentException(
                $"The key {key} names {typeof(T).Name}.{property}, which matches {(matches.Count == 0 ? "no column" : "several columns")} of the schema ({string.Join(", ", columns.Select(c => c.Name))}): name the column(s) as strings instead.",
                nameof(key));
    }
}
