using System.Diagnostics.CodeAnalysis;
using Microsoft.Extensions.DependencyInjection;

namespace Patterns.Orchestration.Engine;

/// <summary>A registered workflow type: its name and how to create an instance of it.</summary>
internal sealed class WorkflowDefinition(string name, Type type, Func<IServiceProvider, WorkflowBase> factory)
{
    public string Name { get; } = name;

    public Type Type { get; } = type;

    public WorkflowBase Create(IServiceProvider services) => factory(services);

    public static WorkflowDefinition For<[DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicConstructors)] TWorkflow>(string? name)
        where TWorkflow : WorkflowBase
    {
        var factory = ActivatorUtilities.CreateFactory<TWorkflow>([]);
        return new WorkflowDefinition(name ?? typeof(TWorkflow).Name, typeof(TWorkflow), sp => factory(sp, null));
    }
}
