using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Patterns.Etl;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers ETL jobs.</summary>
public static class EtlServiceCollectionExtensions
{
    /// <summary>Adds ETL jobs: <see cref="IEtlJobs"/> runs them on demand, and a hosted service runs the scheduled ones; <see cref="EtlJobsHealthCheck"/> reports them. Calls add to the same set of jobs.</summary>
    /// <param name="services">The services.</param>
    /// <param name="configure">Adds the jobs.</param>
    /// <returns>The builder, to add more jobs.</returns>
    public static EtlBuilder AddEtl(this IServiceCollection services, Action<EtlBuilder>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        var jobs = new List<EtlJobRegistration>();
        services.AddSingleton(new EtlJobList(jobs));
        services.TryAddSingleton<EtlJobs>();
        services.TryAddSingleton<IEtlJobs>(static sp => sp.GetRequiredService<EtlJobs>());
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IHostedService, EtlJobs>(static sp => sp.GetRequiredService<EtlJobs>()));
        services.TryAddSingleton(static sp => new EtlJobsHealthCheck(sp.GetRequiredService<EtlJobs>()));
        var builder = new EtlBuilder(services, jobs);
        configure?.Invoke(builder);
        return builder;
    }
}
