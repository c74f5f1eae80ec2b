using System.Collections.Immutable;
using System.Text;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Syntax;

namespace Patterns.Snippets.Tests;

/// <summary>
/// Every <c>```csharp</c> block of README.md, docs/**/*.md and the packages' READMEs compiles as written in a new console
/// project (the SDK's implicit usings and nothing else), against this repository's packages. A block that is a listing of
/// signatures, not code to paste, is marked <c>```csharp skip-compile</c> (or preceded by <c>&lt;!-- skip-compile --&gt;</c>).
/// Pages are discovered, so a new page is covered without touching this test.
/// </summary>
public sealed class SnippetTests
{
    private static readonly string[] ImplicitUsings =
        ["System", "System.Collections.Generic", "System.IO", "System.Linq", "System.Net.Http", "System.Threading", "System.Threading.Tasks"];

    private static readonly Lazy<ImmutableArray<MetadataReference>> References = new(() =>
        [.. ((string)AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES")!).Split(Path.PathSeparator)
            .Where(p => !Path.GetFileName(p).StartsWith("xunit", StringComparison.OrdinalIgnoreCase))
            .Select(p => MetadataReference.CreateFromFile(p))]);

    /// <summary>The source generators a new project runs: System.Text.Json's (from the SDK's targeting pack) and Patterns' own.</summary>
    private static readonly Lazy<ImmutableArray<ISourceGenerator>> Generators = new(() =>
    {
        var runtime = new DirectoryInfo(System.Runtime.InteropServices.RuntimeEnvironment.GetRuntimeDirectory());
        var packs = Path.Combine(runtime.Parent!.Parent!.Parent!.FullName, "packs", "Microsoft.NETCore.App.Ref");
        var pack = Directory.GetDirectories(packs).OrderBy(d => Version.Parse(Path.GetFileName(d).Split('-')[0])).Last();
        var json = new Microsoft.CodeAnalysis.Diagnostics.AnalyzerFileReference(
            Path.Combine(pack, "analyzers", "dotnet", "cs", "System.Text.Json.SourceGeneration.dll"), new Loader());
        return [.. json.GetGenerators(LanguageNames.CSharp), new Patterns.Generators.HandlerRegistrationGenerator().AsSourceGenerator(), new Patterns.Generators.ActivityRegistrationGenerator().AsSourceGenerator()];
    });

    public static TheoryData<string> Snippets()
    {
        var data = new TheoryData<string>();
        foreach (var snippet in Snippet.All(RepoRoot()))
        {
            data.Add(snippet.Id);
        }

        return data;
    }

    [Fact]
    public void Snippets_AreFound_InTheReadmeAndTheDocs()
    {
        var all = Snippet.All(RepoRoot()).ToList();

        all.Should().Contain(s => s.Id.StartsWith("README.md:", StringComparison.Ordinal));
        all.Select(s => s.Id.Split(':')[0]).Distinct().Should().HaveCountGreaterThan(10);
    }

    [Fact]
    public void EveryPage_SaysWhatToInstall()
    {
        var root = RepoRoot();
        var pages = Directory.EnumerateFiles(Path.Combine(root, "docs"), "*.md", SearchOption.AllDirectories)
            .Append(Path.Combine(root, "README.md"))
            .Concat(Directory.EnumerateFiles(Path.Combine(root, "src"), "README.md", SearchOption.AllDirectories))
            .Concat(Directory.EnumerateFiles(Path.Combine(root, "samples"), "README.md", SearchOption.AllDirectories))
            .Where(p => !p.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}", StringComparison.Ordinal)
                && !p.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}", StringComparison.Ordinal));

        pages.Where(p => !File.ReadAllText(p).Contains("dotnet add package ", StringComparison.Ordinal))
            .Select(p => Path.GetRelativePath(root, p))
            .Should().BeEmpty("every page says which packages to install (a `dotnet add package ...` line)");
    }

    [Theory]
    [MemberData(nameof(Snippets))]
    public void Snippet_CompilesAsWritten(string id)
    {
        var snippet = Snippet.All(RepoRoot()).Single(s => s.Id == id);
        var parse = new CSharpParseOptions(LanguageVersion.Preview);
        var code = CSharpSyntaxTree.ParseText(snippet.Code, parse, path: id);
        var usings = CSharpSyntaxTree.ParseText(string.Concat(ImplicitUsings.Select(u => $"global using global::{u};\n")), parse);
        var isProgram = code.GetRoot().DescendantNodes().OfType<GlobalStatementSyntax>().Any();
        var compilation = CSharpCompilation.Create(
            "Snippet",
            [code, usings],
            References.Value,
            new CSharpCompilationOptions(isProgram ? OutputKind.ConsoleApplication : OutputKind.DynamicallyLinkedLibrary, nullableContextOptions: NullableContextOptions.Enable));

        CSharpGeneratorDriver.Create(Generators.Value, parseOptions: parse).RunGeneratorsAndUpdateCompilation(compilation, out var generated, out _);
        var errors = generated.GetDiagnostics().Where(d => d.Severity == DiagnosticSeverity.Error).ToList();

        errors.Should().BeEmpty($"the snippet at {id} should compile as written:\n{Describe(errors, snippet.Code)}");
    }

    private static string Describe(List<Diagnostic> errors, string code)
    {
        var text = new StringBuilder();
        foreach (var error in errors.Take(10))
        {
            text.AppendLine(error.ToString());
        }

        text.AppendLine("---").AppendLine(code);
        return text.ToString();
    }

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Patterns.Core.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException($"No Patterns.Core.sln above {AppContext.BaseDirectory}.");
    }
}

internal sealed class Loader : Microsoft.CodeAnalysis.IAnalyzerAssemblyLoader
{
    public void AddDependencyLocation(string fullPath)
    {
    }

    public System.Reflection.Assembly LoadFromPath(string fullPath) => System.Reflection.Assembly.LoadFrom(fullPath);
}

/// <summary>One <c>```csharp</c> block: its page and line (the id) and its code.</summary>
internal sealed record Snippet(string Id, string Code)
{
    public static IEnumerable<Snippet> All(string root)
    {
        var pages = new List<string> { Path.Combine(root, "README.md") };
        pages.AddRange(Directory.EnumerateFiles(Path.Combine(root, "docs"), "*.md", SearchOption.AllDirectories));
        pages.AddRange(Directory.EnumerateFiles(Path.Combine(root, "src"), "README.md", SearchOption.AllDirectories)
            .Where(p => !p.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}", StringComparison.Ordinal)
                && !p.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}", StringComparison.Ordinal)));
        pages.AddRange(Directory.EnumerateFiles(Path.Combine(root, "samples"), "README.md", SearchOption.AllDirectories)
            .Where(p => !p.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}", StringComparison.Ordinal)));
        foreach (var page in pages.Order(StringComparer.Ordinal))
        {
            var relative = Path.GetRelativePath(root, page).Replace('\\', '/');
            var lines = File.ReadAllLines(page);
            for (var i = 0; i < lines.Length; i++)
            {
                var fence = lines[i].TrimStart();
                if (!fence.StartsWith("```csharp", StringComparison.Ordinal) && !fence.StartsWith("```cs ", StringComparison.Ordinal))
                {
                    continue;
                }

                var indent = lines[i].Length - fence.Length;
                var skip = fence.Contains("skip-compile", StringComparison.Ordinal)
                    || (i > 0 && lines[i - 1].Contains("<!-- skip-compile -->", StringComparison.Ordinal));
                var start = i + 1;
                var end = start;
                while (end < lines.Length && !lines[end].TrimStart().StartsWith("```", StringComparison.Ordinal))
                {
                    end++;
                }

                if (!skip)
                {
                    var code = string.Join('\n', lines[start..end].Select(l => l.Length >= indent && string.IsNullOrWhiteSpace(l[..indent]) ? l[indent..] : l));
                    yield return new Snippet($"{relative}:{i + 1}", code);
                }

                i = end;
            }
        }
    }
}
