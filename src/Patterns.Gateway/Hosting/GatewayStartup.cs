using Microsoft.Extensions.Hosting;
using Patterns.Gateway;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Applies the weights set with <see cref="GatewayBuilder.SetWeights"/> when the host starts.</summary>
internal sealed class GatewayStartup(DestinationWeights weights, IEnumerable<GatewayBuilder.IConfigureWeights> initial) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken)
    {
        foreach (var configure in initial)
        {
            configure.Apply(weights);
        }

        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
