using System.Collections.Immutable;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Patterns.Generators;
using Patterns.Messaging;
using Patterns.PubSub;
using Patterns.RequestResponse;

namespace Patterns.Generators.Tests;

public sealed record Shipped(int Id);

public sealed record Ask(string Text) : IRequest<Answer>;

public sealed record Answer(string Text);

public sealed class ShippedHandler(ShippedLog log) : IMessageHandler<Shipped>
{
    public ValueTask HandleAsync(Shipped message, MessageContext context, CancellationToken cancellationToken)
    {
        log.Ids.Add(message.Id);
        log.Done.TrySetResult();
        return default;
    }
}

internal sealed class AskHandler : IRequestContextHandler<Ask, Answer>
{
    public ValueTask<Answer> HandleAsync(Ask request, RequestContext context, CancellationToken cancellationToken) => new(new Answer(request.Text + "!"));
}

public sealed class ShippedLog
{
    public List<int> Ids { get; } = [];

    public TaskCompletionSource Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
}

public sealed class HandlerRegistrationGeneratorTests
{
    [Fact]
    public async Task AddHandlersFromAssembly_RegistersThisProjectsHandlers_WhichThenHandleMessagesAndRequests()
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.AddPatterns(p => p.UseInMemory());
        builder.Services.AddSingleton<ShippedLog>();
        builder.AddHandlersFromAssembly();
        using var host = builder.Build();
        await host.StartAsync();

        await host.Services.GetRequiredService<IPublisher>().PublishAsync(new Shipped(7));
        var answer = await host.Services.GetRequiredService<IRequestClient>().SendAsync(new Ask("hi"));

        answer.Text.Should().Be("hi!");
        var log = host.Services.GetRequiredService<ShippedLog>();
        await log.Done.Task.WaitAsync(TimeSpan.FromSeconds(30));
        log.Ids.Should().Equal(7);
        await host.StopAsync();
    }

    [Fact]
    public void Generator_EmitsOneTypedRegistrationPerHandlerContract_AndSkipsWhatItCannotName()
    {
        var generated = Run("""
            using Patterns.Messaging;
            using Patterns.RequestResponse;
            namespace App;
            public sealed record A;
            public sealed record B;
            public sealed record Q;
            public sealed class TwoHandler : IMessageHandler<A>, IMessageHandler<B>
            {
                public System.Threading.Tasks.ValueTask HandleAsync(A m, MessageContext c, System.Threading.CancellationToken t) => default;
                public System.Threading.Tasks.ValueTask HandleAsync(B m, MessageContext c, System.Threading.CancellationToken t) => default;
            }
            public sealed class QHandler : IRequestHandler<Q, int>
            {
                public System.Threading.Tasks.ValueTask<int> HandleAsync(Q r, System.Threading.CancellationToken t) => new(1);
            }
            public abstract class AbstractHandler : IMessageHandler<A>
            {
                public abstract System.Threading.Tasks.ValueTask HandleAsync(A m, MessageContext c, System.Threading.CancellationToken t);
            }
            public sealed class GenericHandler<T> : IMessageHandler<T>
            {
                public System.Threading.Tasks.ValueTask HandleAsync(T m, MessageContext c, System.Threading.CancellationToken t) => default;
            }
            public static class Outer
            {
                private sealed class Hidden : IMessageHandler<A>
                {
                    public System.Threading.Tasks.ValueTask HandleAsync(A m, MessageContext c, System.Threading.CancellationToken t) => default;
                }
            }
            """, out var diagnostics);

        diagnostics.Where(d => d.Severity == DiagnosticSeverity.Error).Should().BeEmpty();
        generated.Should().Contain(".Subscribe<global::App.A, global::App.TwoHandler>()")
            .And.Contain(".Subscribe<global::App.B, global::App.TwoHandler>()")
            .And.Contain(".AddHandler<global::App.Q, int, global::App.QHandler>()");
        generated.Should().NotContain("AbstractHandler").And.NotContain("GenericHandler").And.NotContain("Hidden");
        generated.Should().NotContain("typeof(").And.NotContain("GetTypes").And.NotContain("Activator", "registration is explicit code, with no reflection");
    }

    [Fact]
    public void Generator_ProjectWithoutPatterns_GeneratesNothing()
    {
        var compilation = CSharpCompilation.Create("Plain", [CSharpSyntaxTree.ParseText("public sealed class C { }")], References(includePatterns: false));
        var driver = CSharpGeneratorDriver.Create(new HandlerRegistrationGenerator()).RunGenerators(compilation);

        driver.GetRunResult().GeneratedTrees.Should().BeEmpty();
    }

    private static string Run(string source, out ImmutableArray<Diagnostic> diagnostics)
    {
        var compilation = CSharpCompilation.Create(
            "App", [CSharpSyntaxTree.ParseText(source)], References(includePatterns: true), new CSharpCompilationOptions(OutputKind.DynamicallyLinkedLibrary));
        CSharpGeneratorDriver.Create(new HandlerRegistrationGenerator())
            .RunGeneratorsAndUpdateCompilation(compilation, out var output, out _);
        diagnostics = output.GetDiagnostics();
        return output.SyntaxTrees.Last().ToString();
    }

    internal static IEnumerable<MetadataReference> References(bool includePatterns)
    {
        var trusted = ((string)AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES")!).Split(Path.PathSeparator);
        foreach (var path in trusted)
        {
            var name = Path.GetFileNameWithoutExtension(path);
            if (includePatterns || !name.StartsWith("Patterns", StringComparison.Ordinal))
            {
                yield return MetadataReference.CreateFromFile(path);
            }
        }
    }
}
