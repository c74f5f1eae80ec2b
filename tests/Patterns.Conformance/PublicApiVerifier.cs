using System.Reflection;
using System.Text;
using FluentAssertions;

namespace Patterns.Conformance;

/// <summary>
/// Writes every public type and member of a package to a sorted list and compares it with the file committed
/// beside the calling test project, so a change to the public surface is a visible diff.
/// Set PATTERNS_UPDATE_PUBLIC_API=1 to rewrite the files.
/// </summary>
public static class PublicApiVerifier
{
    /// <summary>Compares the public API of <paramref name="assemblyName"/> with tests/<paramref name="testProject"/>/PublicApi/&lt;assembly&gt;.txt.</summary>
    public static void Verify(string assemblyName, string testProject)
    {
        var assembly = Assembly.Load(assemblyName);
        var actual = Describe(assembly);
        var committed = Path.Combine(AppContext.BaseDirectory, "PublicApi", $"{assemblyName}.txt");
        var source = Path.Combine(FindRepoRoot(), "tests", testProject, "PublicApi", $"{assemblyName}.txt");

        if (Environment.GetEnvironmentVariable("PATTERNS_UPDATE_PUBLIC_API") == "1")
        {
            Directory.CreateDirectory(Path.GetDirectoryName(source)!);
            File.WriteAllText(source, actual);
            return;
        }

        File.Exists(committed).Should().BeTrue($"the public API of {assemblyName} must be committed at {source}; run the tests with PATTERNS_UPDATE_PUBLIC_API=1 to create it");
        var expected = File.ReadAllText(committed).ReplaceLineEndings("\n");
        actual.Should().Be(expected, $"the public API of {assemblyName} changed; if on purpose, run the tests with PATTERNS_UPDATE_PUBLIC_API=1 and commit {source}");
    }

    private static string Describe(Assembly assembly)
    {
        var lines = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var type in assembly.GetExportedTypes())
        {
            lines.Add($"{Kind(type)} {Name(type)}{BaseList(type)}");
            const BindingFlags flags = BindingFlags.Public | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;
            foreach (var member in type.GetMembers(flags))
            {
                if (Describe(member) is { } line)
                {
                    lines.Add($"{Name(type)}::{line}");
                }
            }
        }

        var text = new StringBuilder();
        foreach (var line in lines)
        {
            text.Append(line).Append('\n');
        }

        return text.ToString();
    }

    private static string? Describe(MemberInfo member) => member switch
    {
        ConstructorInfo c => $".ctor({Parameters(c.GetParameters())})",
        MethodInfo m when m.IsSpecialName && !m.Name.StartsWith("op_", StringComparison.Ordinal) => null,
        MethodInfo m => $"{(m.IsStatic ? "static " : "")}{(m.IsAbstract ? "abstract " : m.IsVirtual && !m.IsFinal ? "virtual " : "")}{Name(m.ReturnType)} {m.Name}{Generics(m)}({Parameters(m.GetParameters())})",
        PropertyInfo p => $"{Name(p.PropertyType)} {p.Name} {{ {(p.GetMethod?.IsPublic == true ? "get; " : "")}{(p.SetMethod?.IsPublic == true ? (IsInit(p.SetMethod) ? "init; " : "set; ") : "")}}}",
        FieldInfo f when f.IsLiteral => $"const {Name(f.FieldType)} {f.Name} = {f.GetRawConstantValue()}",
        FieldInfo f => $"{(f.IsStatic ? "static " : "")}{(f.IsInitOnly ? "readonly " : "")}{Name(f.FieldType)} {f.Name}",
        EventInfo e => $"event {Name(e.EventHandlerType!)} {e.Name}",
        Type => null,
        _ => member.ToString(),
    };

    private static bool IsInit(MethodInfo setter) =>
        setter.ReturnParameter.GetRequiredCustomModifiers().Any(m => m.FullName == "System.Runtime.CompilerServices.IsExternalInit");

    private static string Generics(MethodInfo method) =>
        method.IsGenericMethodDefinition ? $"<{string.Join(", ", method.GetGenericArguments().Select(a => a.Name))}>" : "";

    private static string Parameters(ParameterInfo[] parameters) =>
        string.Join(", ", parameters.Select(p => $"{(p.IsIn ? "in " : p.ParameterType.IsByRef ? (p.IsOut ? "out " : "ref ") : "")}{Name(p.ParameterType)} {p.Name}{(p.HasDefaultValue ? " = " + (p.DefaultValue ?? "null") : "")}"));

    private static string Kind(Type type) =>
        type.IsInterface ? "interface"
        : type.IsEnum ? "enum"
        : type.IsValueType ? (type.IsDefined(typeof(System.Runtime.CompilerServices.IsReadOnlyAttribute)) ? "readonly struct" : "struct")
        : typeof(Delegate).IsAssignableFrom(type) ? "delegate"
        : type.IsAbstract && type.IsSealed ? "static class"
        : type.IsAbstract ? "abstract class"
        : type.IsSealed ? "sealed class"
        : "class";

    private static string BaseList(Type type)
    {
        var bases = new List<string>();
        if (type.BaseType is { } b && b != typeof(object) && b != typeof(ValueType) && b != typeof(Enum) && b != typeof(MulticastDelegate))
        {
            bases.Add(Name(b));
        }

        bases.AddRange(type.GetInterfaces().Select(Name).Order(StringComparer.Ordinal));
        return bases.Count == 0 ? "" : " : " + string.Join(", ", bases);
    }

    private static string Name(Type type)
    {
        if (type.IsByRef)
        {
            return Name(type.GetElementType()!);
        }

        if (type.IsArray)
        {
            return Name(type.GetElementType()!) + "[]";
        }

        if (type.IsGenericParameter)
        {
            return type.Name;
        }

        if (Nullable.GetUnderlyingType(type) is { } underlying)
        {
            return Name(underlying) + "?";
        }

        var name = type.IsNested ? $"{Name(type.DeclaringType!)}.{type.Name}" : $"{type.Namespace}.{type.Name}";
        if (type.IsGenericType)
        {
            var tick = name.IndexOf('`', StringComparison.Ordinal);
            if (tick >= 0)
            {
                name = name[..tick];
            }

            name += $"<{string.Join(", ", type.GetGenericArguments().Select(Name))}>";
        }

        return name;
    }

    private static string FindRepoRoot()
    {
        var directory = new DirectoryInfo(AppContext.BaseDirectory);
        while (directory is not null && !File.Exists(Path.Combine(directory.FullName, "Patterns.Core.sln")))
        {
            directory = directory.Parent;
        }

        return directory?.FullName ?? throw new InvalidOperationException("Patterns.Core.sln not found above the test output.");
    }
}
