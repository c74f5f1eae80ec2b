using System.Collections.Immutable;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Patterns.Orchestration;

namespace Patterns.Generators.Tests;

public sealed record Parcel(string Id, int Weight);

/// <summary>Activities of every shape the generator registers: Task, Task&lt;T&gt;, ValueTask&lt;T&gt;, ValueTask, no input, context and token.</summary>
[Activities]
public sealed class ParcelActivities(ParcelLog log)
{
    public Task Weigh(Parcel parcel)
    {
        log.Calls.Enqueue($"weigh {parcel.Id}");
        return Task.CompletedTask;
    }

    public Task<string> LabelAsync(Parcel parcel, ActivityContext context, CancellationToken cancellationToken)
    {
        log.Calls.Enqueue($"label {parcel.Id} in {context.InstanceId} ({context.Activity}, attempt {context.Attempt}, cancellable {cancellationToken.CanBeCanceled})");
        return Task.FromResult($"L-{parcel.Id}");
    }

    public ValueTask<int> Postage(int weight) => new(weight * 3);

    public ValueTask Close()
    {
        log.Calls.Enqueue("close");
        return default;
    }

    // Not activities: a method that does not return a task, and a static one.
    public int Count() => log.Calls.Count;

    public static Task Ignored() => Task.CompletedTask;
}

public sealed class ParcelLog
{
    public System.Collections.Concurrent.ConcurrentQueue<string> Calls { get; } = new();
}

public sealed class ParcelWorkflow : Workflow<Parcel, string>
{
    public override async Task<string> RunAsync(WorkflowContext context, Parcel input)
    {
        await context.CallActivityAsync("Weigh", input);
        var label = await context.CallActivityAsync<string>("Label", input);
        var postage = await context.CallActivityAsync<int>("Postage", input.Weight);
        await context.CallActivityAsync("Close");
        return $"{label}: {postage}";
    }
}

public sealed class ActivityRegistrationGeneratorTests
{
    [Fact]
    public async Task AddActivitiesFromAssembly_RegistersEveryTaskMethodOfThisProjectsActivitiesClasses_WhichAWorkflowThenCalls()
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.AddPatterns(p => p.UseInMemory());
        builder.Services.AddSingleton<ParcelLog>();
        builder.AddOrchestration(o => o.AddWorkflow<ParcelWorkflow>().AddActivitiesFromAssembly());
        using var host = builder.Build();
        await host.StartAsync();
        var client = host.Services.GetRequiredService<IWorkflowClient>();

        await client.StartAsync(nameof(ParcelWorkflow), "p-1", new Parcel("P1", 7));
        var result = await client.GetResultAsync<string>("p-1").WaitAsync(TimeSpan.FromSeconds(30));

        result.Should().Be("L-P1: 21");
        host.Services.GetRequiredService<ParcelLog>().Calls.Should().Equal(
            "weigh P1", "label P1 in p-1 (Label, attempt 1, cancellable True)", "close");
        await host.StopAsync();
    }

    [Fact]
    public void Generator_EmitsOneDirectCallPerActivityMethod_WithNoReflection()
    {
        var generated = Run("""
            using System.Threading;
            using System.Threading.Tasks;
            using Patterns.Orchestration;
            namespace App;
            public sealed record Item(int N);
            [Activities]
            public sealed class Stock
            {
                public Task Reserve(Item item) => Task.CompletedTask;
                public Task<string> ChargeAsync(Item item, ActivityContext context, CancellationToken token) => Task.FromResult("");
                public ValueTask<int> Count() => new(1);
                public ValueTask Flush(CancellationToken token) => default;
                public int NotAnActivity() => 0;
                internal Task Internal() => Task.CompletedTask;
            }
            public sealed class Unmarked
            {
                public Task Other() => Task.CompletedTask;
            }
            """, out var diagnostics);

        diagnostics.Where(d => d.Severity == DiagnosticSeverity.Error).Should().BeEmpty();
        generated.Should().Contain("builder.AddActivity<global::App.Stock, global::App.Item, object?>(\"Reserve\", static async (activities, input, context) => { await activities.Reserve(input).ConfigureAwait(false); return null; });")
            .And.Contain("builder.AddActivity<global::App.Stock, global::App.Item, string>(\"Charge\", static (activities, input, context) => activities.ChargeAsync(input, context, context.CancellationToken));")
            .And.Contain("builder.AddActivity<global::App.Stock, object, int>(\"Count\", static (activities, input, context) => activities.Count().AsTask());")
            .And.Contain("builder.AddActivity<global::App.Stock, object, object?>(\"Flush\", static async (activities, input, context) => { await activities.Flush(context.CancellationToken).ConfigureAwait(false); return null; });");
        generated.Should().NotContain("NotAnActivity").And.NotContain("Internal").And.NotContain("Unmarked");
        generated.Should().NotContain("typeof(").And.NotContain("GetMethod").And.NotContain("Invoke(", "registration is explicit code, with no reflection");
    }

    [Fact]
    public void Generator_MethodWithTwoInputsOrClassItCannotName_FailsTheBuildNamingIt()
    {
        Run("""
            using System.Threading.Tasks;
            using Patterns.Orchestration;
            namespace App;
            [Activities]
            public sealed class Payments
            {
                public Task Charge(string card, decimal amount) => Task.CompletedTask;
            }
            public static class Outer
            {
                [Activities]
                private sealed class Hidden
                {
                    public Task Run() => Task.CompletedTask;
                }
            }
            [Activities]
            public sealed class Generic<T>
            {
                public Task Run() => Task.CompletedTask;
            }
            """, out var diagnostics);

        var errors = diagnostics.Where(d => d.Id.StartsWith("PATTERNS", StringComparison.Ordinal)).OrderBy(d => d.Location.SourceSpan.Start).ToList();
        errors.Select(d => (d.Id, d.GetMessage(System.Globalization.CultureInfo.InvariantCulture), d.Location.GetLineSpan().StartLinePosition.Line)).Should().Equal(
            ("PATTERNS001", "Activity method Payments.Charge takes more than one input (card, amount); pass one record instead", 6),
            ("PATTERNS002", "[Activities] class Hidden cannot be registered: the generated registration cannot name it (make it internal or public)", 11),
            ("PATTERNS002", "[Activities] class Generic cannot be registered: it is generic", 17));
        errors.Should().OnlyContain(d => d.Severity == DiagnosticSeverity.Error);
    }

    private static string Run(string source, out ImmutableArray<Diagnostic> diagnostics)
    {
        var compilation = CSharpCompilation.Create(
            "App",
            [CSharpSyntaxTree.ParseText(source)],
            HandlerRegistrationGeneratorTests.References(includePatterns: true),
            new CSharpCompilationOptions(OutputKind.DynamicallyLinkedLibrary, nullableContextOptions: NullableContextOptions.Enable));
        CSharpGeneratorDriver.Create(new ActivityRegistrationGenerator())
            .RunGeneratorsAndUpdateCompilation(compilation, out var output, out var generatorDiagnostics);
        diagnostics = output.GetDiagnostics().AddRange(generatorDiagnostics);
        return output.SyntaxTrees.Count() > 1 ? output.SyntaxTrees.Last().ToString() : string.Empty;
    }
}
