using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Patterns.Hosting;
using Patterns.Testing;

namespace Patterns.Core.Tests;

/// <summary>Builds a real generic host the way an application does, on virtual time.</summary>
internal static class TestHost
{
    public static readonly TimeSpan Wait = TimeSpan.FromSeconds(60);

    public static IHost Build(Action<HostApplicationBuilder> configure, TimeProvider? time = null, Action<PatternsBuilder>? patterns = null, bool harness = true)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true, EnvironmentName = "Testing" });
        builder.Logging.ClearProviders();
        builder.AddPatterns(p =>
        {
            p.UseInMemory();
            if (time is not null)
            {
                p.UseTimeProvider(time);
            }

            patterns?.Invoke(p);
            if (harness)
            {
                p.UseTestHarness();
            }
        });
        configure(builder);
        return builder.Build();
    }

    public static async Task<IHost> StartAsync(Action<HostApplicationBuilder> configure, TimeProvider? time = null, Action<PatternsBuilder>? patterns = null, bool harness = true)
    {
        var host = Build(configure, time, patterns, harness);
        await host.StartAsync();
        return host;
    }

    public static PatternsTestHarness Harness(this IHost host) => host.Services.GetRequiredService<PatternsTestHarness>();
}
