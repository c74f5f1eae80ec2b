using System.Collections.Generic;
using System.Collections.Immutable;
using System.Linq;
using System.Text;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.Text;

namespace Patterns.Generators;

/// <summary>
/// Generates <c>AddActivitiesFromAssembly()</c> on <c>OrchestrationBuilder</c>: one explicit, typed <c>AddActivity</c>
/// registration per public instance method that returns a task, of each class marked <c>[Activities]</c> in the project.
/// The methods are found at compile time and called directly, so activities need no reflection at run time and stay
/// trimming- and NativeAOT-safe (unlike <c>AddActivities&lt;T&gt;()</c>, which finds and invokes them by reflection).
/// </summary>
[Generator(LanguageNames.CSharp)]
public sealed class ActivityRegistrationGenerator : IIncrementalGenerator
{
    private const string Attribute = "Patterns.Orchestration.ActivitiesAttribute";
    private const string ActivityContext = "global::Patterns.Orchestration.ActivityContext";
    private const string CancellationToken = "global::System.Threading.CancellationToken";

    private static readonly DiagnosticDescriptor TooManyInputs = new(
        "PATTERNS001",
        "Activity method takes more than one input",
        "Activity method {0} takes more than one input ({1}); pass one record instead",
        "Patterns.Orchestration",
        DiagnosticSeverity.Error,
        isEnabledByDefault: true);

    private static readonly DiagnosticDescriptor Unusable = new(
        "PATTERNS002",
        "Activities class cannot be registered",
        "[Activities] class {0} cannot be registered: {1}",
        "Patterns.Orchestration",
        DiagnosticSeverity.Error,
        isEnabledByDefault: true);

    /// <inheritdoc />
    public void Initialize(IncrementalGeneratorInitializationContext context)
    {
        var classes = context.SyntaxProvider
            .ForAttributeWithMetadataName(Attribute, static (_, _) => true, static (ctx, _) => Describe((INamedTypeSymbol)ctx.TargetSymbol))
            .Collect();

        context.RegisterSourceOutput(classes, static (spc, found) =>
        {
            foreach (var problem in found.SelectMany(static c => c.Problems))
            {
                var location = Location.Create(problem.Path, problem.Span, problem.Lines);
                spc.ReportDiagnostic(Diagnostic.Create(problem.TooManyInputs ? TooManyInputs : Unusable, location, problem.Subject, problem.Detail));
            }

            if (found.Length > 0)
            {
                spc.AddSource("PatternsActivities.g.cs", Render(found));
            }
        });
    }

    private static ActivityClass Describe(INamedTypeSymbol type)
    {
        var problems = new List<Problem>();
        var reason = type.IsAbstract || type.IsStatic ? "it is abstract or static"
            : type.IsGenericType ? "it is generic"
            : type.IsFileLocal || !Symbols.IsReachable(type) ? "the generated registration cannot name it (make it internal or public)"
            : null;
        if (reason is not null)
        {
            problems.Add(Problem.At(type, false, type.Name, reason));
            return new ActivityClass(Symbols.Full(type), default, new EquatableArray<Problem>(problems.ToImmutableArray()));
        }

        var methods = new List<Method>();
        foreach (var method in type.GetMembers().OfType<IMethodSymbol>())
        {
            if (method.MethodKind != MethodKind.Ordinary || method.IsStatic || method.DeclaredAccessibility != Accessibility.Public || method.IsGenericMethod)
            {
                continue;
            }

            var returns = ReturnKind(method.ReturnType);
            if (returns is null)
            {
                continue;
            }

            var inputs = method.Parameters.Where(static p => Symbols.Full(p.Type) is not ActivityContext and not CancellationToken).ToList();
            if (inputs.Count > 1)
            {
                problems.Add(Problem.At(method, true, $"{type.Name}.{method.Name}", string.Join(", ", inputs.Select(static p => p.Name))));
                continue;
            }

            var arguments = method.Parameters.Select(static p => Symbols.Full(p.Type) switch
            {
                ActivityContext => "context",
                CancellationToken => "context.CancellationToken",
                _ => "input",
            });
            var name = method.Name.EndsWith("Async", System.StringComparison.Ordinal) ? method.Name.Substring(0, method.Name.Length - 5) : method.Name;
            var result = method.ReturnType is INamedTypeSymbol { IsGenericType: true } generic ? Symbols.Full(generic.TypeArguments[0]) : null;
            methods.Add(new Method(name, method.Name, inputs.Count == 1 ? Symbols.Full(inputs[0].Type) : null, result, returns.Value, string.Join(", ", arguments)));
        }

        return new ActivityClass(Symbols.Full(type), new EquatableArray<Method>(methods.ToImmutableArray()), new EquatableArray<Problem>(problems.ToImmutableArray()));
    }

    /// <summary>Whether the method returns a task (true for <c>ValueTask</c>s), or null when it is not an activity.</summary>
    private static bool? ReturnKind(ITypeSymbol type) => type.OriginalDefinition.ToDisplayString() switch
    {
        "System.Threading.Tasks.Task" or "System.Threading.Tasks.Task<TResult>" => false,
        "System.Threading.Tasks.ValueTask" or "System.Threading.Tasks.ValueTask<TResult>" => true,
        _ => null,
    };

    private static string Render(ImmutableArray<ActivityClass> classes)
    {
        var text = new StringBuilder();
        text.AppendLine("// <auto-generated/> by Patterns.Generators.ActivityRegistrationGenerator");
        text.AppendLine("#nullable enable");
        text.AppendLine("namespace Patterns.Orchestration");
        text.AppendLine("{");
        text.AppendLine("    /// <summary>Registers the activities of every <c>[Activities]</c> class in this project, found at compile time (no reflection at run time).</summary>");
        text.AppendLine("    [global::System.CodeDom.Compiler.GeneratedCode(\"Patterns.Generators\", \"1.0\")]");
        text.AppendLine("    internal static class PatternsGeneratedActivities");
        text.AppendLine("    {");
        text.AppendLine("        /// <summary>Registers each public method that returns a task, of each <c>[Activities]</c> class, as an activity named after the method (without an <c>Async</c> suffix).</summary>");
        text.AppendLine("        /// <param name=\"builder\">The orchestration builder.</param>");
        text.AppendLine("        /// <returns>The builder.</returns>");
        text.AppendLine("        public static global::Patterns.Orchestration.OrchestrationBuilder AddActivitiesFromAssembly(this global::Patterns.Orchestration.OrchestrationBuilder builder)");
        text.AppendLine("        {");
        foreach (var type in classes.Distinct().OrderBy(static c => c.Type, System.StringComparer.Ordinal))
        {
            foreach (var method in type.Methods)
            {
                var input = method.Input ?? "object";
                var result = method.Result ?? "object";
                var call = $"activities.{method.Member}({method.Arguments})";
                var body = method.Result is null
                    ? $"static async (activities, input, context) => {{ await {call}.ConfigureAwait(false); return null; }}"
                    : method.ValueTask
                        ? $"static (activities, input, context) => {call}.AsTask()"
                        : $"static (activities, input, context) => {call}";
                text.Append("            builder.AddActivity<").Append(type.Type).Append(", ").Append(input).Append(", ").Append(result).Append(method.Result is null ? "?" : string.Empty)
                    .Append(">(\"").Append(method.Name).Append("\", ").Append(body).AppendLine(");");
            }
        }

        text.AppendLine("            return builder;");
        text.AppendLine("        }");
        text.AppendLine("    }");
        text.AppendLine("}");
        return text.ToString();
    }

    private sealed record ActivityClass(string Type, EquatableArray<Method> Methods, EquatableArray<Problem> Problems);

    private sealed record Method(string Name, string Member, string? Input, string? Result, bool ValueTask, string Arguments);

    private sealed record Problem(bool TooManyInputs, string Subject, string Detail, string Path, TextSpan Span, LinePositionSpan Lines)
    {
        public static Problem At(ISymbol symbol, bool tooManyInputs, string subject, string detail)
        {
            var location = symbol.Locations.FirstOrDefault(static l => l.IsInSource);
            var lines = location?.GetLineSpan();
            return new Problem(tooManyInputs, subject, detail, lines?.Path ?? string.Empty, location?.SourceSpan ?? default, lines?.Span ?? default);
        }
    }
}
